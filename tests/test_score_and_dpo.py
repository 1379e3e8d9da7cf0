"""Score models (reward/cost) and DPO on the tiny random Llama: the head reads the last real token and is
saved and reloaded with the adapter; each method trains only what it should and moves its own metric."""

import math

import pytest
import torch

from safealign.data.formats import collate_pairs, tokenize_pair
from safealign.data.prompts import ALPACA
from safealign.data.streams import BatchStream
from safealign.loop import TrainConfig, make_accelerator, train
from safealign.methods.base import MethodContext, trainable_parameters
from safealign.methods.dpo import DPO, DPOConfig
from safealign.methods.score import CostModel, CostModelConfig, RewardModel, RewardModelConfig
from safealign.models import LoraConfig, Reference, add_lora, load_causal_lm, load_tokenizer, response_log_probs
from safealign.score_model import ScoreModel, last_token_index, load_score_model, save_score_model

PAIRS = [{"prompt": f"how can I help my neighbour {i}", "chosen": "sure here is a plan first then finally",
          "rejected": "sorry I cannot help with that", "chosen_is_safe": False, "rejected_is_safe": True}
         for i in range(8)]
# Harmless pairs: chosen = the safer response (the refusal, labelled safe), rejected = the compliance.
HARMLESS = [{**p, "chosen": p["rejected"], "rejected": p["chosen"], "chosen_is_safe": True, "rejected_is_safe": False}
            for p in PAIRS]


def _pair_stream(tok, pairs=PAIRS, batch_size=4):
    return BatchStream([tokenize_pair(tok, p, 128, ALPACA) for p in pairs], batch_size, tok.pad_token_id, seed=0,
                       collate_fn=collate_pairs)


def _score_model(tiny_llama):
    torch.manual_seed(0)
    return ScoreModel(add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=0.0)))


def test_last_token_index_for_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 3, 0]
    assert last_token_index(left).tolist() == [3, 3]


def test_score_ignores_padding_and_head_starts_with_zero_bias(tiny_llama):
    tok = load_tokenizer(str(tiny_llama))
    model = _score_model(tiny_llama).eval()
    assert torch.count_nonzero(model.score_head.bias) == 0
    assert model.score_head.weight.requires_grad and model.score_head.bias.requires_grad  # trainable under LoRA
    ids = tok("the film is good")["input_ids"]
    alone = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    padded = torch.tensor([ids + [tok.pad_token_id] * 3])
    mask = torch.tensor([[1] * len(ids) + [0] * 3])
    torch.testing.assert_close(model(padded, mask), alone, atol=1e-5, rtol=1e-5)


def test_score_model_saves_and_reloads_with_its_adapter(tiny_llama, tmp_path):
    tok = load_tokenizer(str(tiny_llama))
    model = _score_model(tiny_llama)
    with torch.no_grad():
        model.score_head.bias.fill_(0.25)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # a non-trivial adapter, so merging it changes the scores
    save_score_model(model, tok, tmp_path / "rm", base=str(tiny_llama))
    batch = collate_pairs([tokenize_pair(tok, PAIRS[0], 128, ALPACA)], tok.pad_token_id)
    reloaded = load_score_model(str(tmp_path / "rm")).eval()
    torch.testing.assert_close(reloaded(batch["input_ids"], batch["attention_mask"]),
                               model.eval()(batch["input_ids"], batch["attention_mask"]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method_cls,cfg", [(RewardModel, RewardModelConfig()), (CostModel, CostModelConfig())])
def test_score_methods_learn_the_pair_order(tiny_llama, tmp_path, method_cls, cfg):
    tok = load_tokenizer(str(tiny_llama))
    model = _score_model(tiny_llama)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    train_cfg = TrainConfig(lr=5e-3, max_steps=20, batch_size=4, log_every=20)
    pairs = PAIRS if method_cls is RewardModel else HARMLESS
    result = train(model, method_cls(cfg, 20), {"train": _pair_stream(tok, pairs)}, train_cfg, tmp_path,
                   make_accelerator(train_cfg), seed=0)
    trained = result["model"].eval()
    batch = collate_pairs([tokenize_pair(tok, p, 128, ALPACA) for p in pairs], tok.pad_token_id)
    with torch.no_grad():
        scores = trained(batch["input_ids"], batch["attention_mask"])
    chosen, rejected = scores[:8], scores[8:]
    if method_cls is RewardModel:
        assert (chosen > rejected).all()  # the better response scores higher
    else:
        assert (rejected > chosen).all()  # chosen = the safer response, so the rejected one costs more
        assert (chosen < 0).all() and (rejected > 0).all()  # sign: safe below 0, unsafe above
    for n, p in trained.named_parameters():
        if not p.requires_grad:
            assert torch.equal(frozen[n], p.detach())


def test_dpo_reference_is_the_adapter_free_model_and_training_raises_the_margin(tiny_llama, tmp_path):
    tok = load_tokenizer(str(tiny_llama))
    torch.manual_seed(0)
    model = add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=0.0))
    batch = collate_pairs([tokenize_pair(tok, p, 128, ALPACA) for p in PAIRS[:2]], tok.pad_token_id)
    base = load_causal_lm(str(tiny_llama)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
        expected, _, _ = response_log_probs(base, batch)
    reference, _, _ = Reference(model).log_probs(model, batch)
    torch.testing.assert_close(reference, expected, atol=1e-5, rtol=1e-5)

    cfg = TrainConfig(lr=5e-3, max_steps=15, batch_size=4, log_every=15)
    result = train(model, DPO(DPOConfig(beta=0.1), 15), {"train": _pair_stream(tok)}, cfg, tmp_path,
                   make_accelerator(cfg), seed=0)
    rows = [r for r in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]
    import json

    last = json.loads(rows[-1])
    assert last["loss"] < math.log(2)  # below the loss at zero margin
    assert last["reward_chosen"] > last["reward_rejected"]
    assert any("lora" in k for k in trainable_parameters(result["model"]))


def test_dpo_precomputed_reference_matches_the_per_step_reference_and_is_cached(tiny_llama, tmp_path, monkeypatch):
    import json

    from safealign.methods.dpo import REFERENCE_FILE

    tok = load_tokenizer(str(tiny_llama))
    cfg = TrainConfig(lr=5e-3, max_steps=6, batch_size=4, log_every=1)

    def losses(out, precompute):
        torch.manual_seed(0)
        model = add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=0.0))
        train(model, DPO(DPOConfig(beta=0.1, precompute_ref=precompute), 6), {"train": _pair_stream(tok)}, cfg, out,
              make_accelerator(cfg), seed=0)
        return [json.loads(r)["loss"] for r in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in r]

    per_step = losses(tmp_path / "per_step", False)
    precomputed = losses(tmp_path / "pre", True)
    assert precomputed == pytest.approx(per_step, abs=1e-5)
    cached = json.loads((tmp_path / "pre" / REFERENCE_FILE).read_text())
    assert len(cached["chosen"]) == len(cached["rejected"]) == len(PAIRS)
    assert not (tmp_path / "per_step" / REFERENCE_FILE).exists()

    # A rerun in the same directory (a resume) reads the cache: no reference forward at all.
    def no_forward(*args, **kwargs):
        raise AssertionError("the reference ran although its log-probs were cached")

    monkeypatch.setattr(Reference, "log_probs", no_forward)
    method = DPO(DPOConfig(precompute_ref=True), 6)
    stream = _pair_stream(tok)
    method.setup(add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8)), {"train": stream},
                 MethodContext(tmp_path / "pre"))
    assert [f["ref_chosen_logp"] for f in stream.features] == cached["chosen"]


def test_validation_perplexity_is_exp_of_the_token_mean_nll_of_chosen_responses(tiny_llama):
    from safealign.data.formats import collate
    from safealign.evals.perplexity import response_perplexity
    from safealign.losses.sft import sequence_nll

    tok = load_tokenizer(str(tiny_llama))
    model = load_causal_lm(str(tiny_llama))
    chosen = [tokenize_pair(tok, {**p, "chosen": p["chosen"] + " good" * i}, 128, ALPACA)["chosen"] for i, p in enumerate(PAIRS[:5])]
    with torch.no_grad():  # one batch: every response token weighs the same
        batch = collate(chosen, tok.pad_token_id)
        nll, n = sequence_nll(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
    expected = math.exp(float(nll.sum() / n.sum()))
    assert response_perplexity(model, chosen, tok.pad_token_id, batch_size=2) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("normalization", ["token_mean", "sum"])
def test_dpo_ipo_divides_each_log_prob_by_its_response_length_as_trl(tiny_llama, normalization):
    """loss_type ipo takes per-token-mean log-probs by default (TRL's DPOTrainer, the IPO authors), policy and
    reference alike; `ipo_normalization: sum` keeps the summed form. Chosen and rejected differ in length."""
    from safealign.losses.preference import dpo_loss

    tok = load_tokenizer(str(tiny_llama))
    torch.manual_seed(0)
    model = add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # policy ≠ reference, so the log-ratios are not zero
    batch = collate_pairs([tokenize_pair(tok, p, 128, ALPACA) for p in PAIRS[:2]], tok.pad_token_id)
    assert DPOConfig(loss_type="ipo").ipo_normalization == "token_mean"
    method = DPO(DPOConfig(beta=0.1, loss_type="ipo", ipo_normalization=normalization), 1)
    method.setup(model, {"train": None}, MethodContext(work_dir="."))
    with torch.no_grad():
        loss = method.step(model, {"train": iter([batch])}, 0).loss
        policy, _, mask = response_log_probs(model, batch)
        ref, _, _ = Reference(model).log_probs(model, batch)
    n = mask.sum(dim=1)
    assert n[0] != n[2]  # the chosen and rejected responses differ in length
    if normalization == "token_mean":
        policy, ref = policy / n, ref / n
    expected = dpo_loss(policy[:2], policy[2:], ref[:2], ref[2:], 0.1, "ipo")[0].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dpo_without_lora_uses_a_frozen_copy(tiny_llama):
    model = load_causal_lm(str(tiny_llama))
    ref = Reference(model)
    assert ref.frozen is not None and not any(p.requires_grad for p in ref.frozen.parameters())


class _StubCostSafeMMDPO:
    """Safe-MM-DPO with the score models replaced: fixed margins and a scripted J_c per update."""

    @staticmethod
    def make(costs):
        from safealign.methods.safe_mm_dpo import SafeMMDPO

        class Stub(SafeMMDPO):
            def setup(self, model, streams, ctx):
                self.reference = Reference(model)
                for name in ("train", "harmless"):
                    for i, f in enumerate(streams[name].features):
                        f["margin"] = float(i % 3)

            def expected_cost(self, model):
                return costs[self.updated_at + 1] if self.updated_at + 1 < len(costs) else costs[-1]

        return Stub

    @staticmethod
    def cfg():
        from safealign.methods.safe_mm_dpo import SafeMMDPOConfig

        return SafeMMDPOConfig(lambda_update_interval=1, lambda_lr=1.0, cost_threshold=0.0, lambda_max=3.0)


def test_safe_mm_dpo_lambda_follows_the_cost_and_survives_resume(tiny_llama, tmp_path):
    import json

    tok = load_tokenizer(str(tiny_llama))
    costs = [2.0, 2.0, -1.0, -5.0]  # J_c per step: above d twice, then below
    method_cls = _StubCostSafeMMDPO.make(costs)
    cfg = TrainConfig(lr=1e-3, max_steps=4, batch_size=2, log_every=1, save_every=1)

    def run(out, stop_after=None):
        torch.manual_seed(0)
        model = add_lora(load_causal_lm(str(tiny_llama)), LoraConfig(r=4, alpha=8, dropout=0.0))
        streams = {"train": _pair_stream(tok, PAIRS, 2), "harmless": _pair_stream(tok, HARMLESS, 2)}
        train(model, method_cls(_StubCostSafeMMDPO.cfg(), 4), streams, cfg, out, make_accelerator(cfg), seed=0,
              stop_after=stop_after)
        return [json.loads(line)["lambda"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]

    whole = run(tmp_path / "whole")
    assert whole == [3.0, 3.0, 2.0, 0.0]  # 1+2 -> clipped at lambda_max 3; 3+2 -> 3; 3-1; 2-5 -> clipped at 0
    run(tmp_path / "resumed", stop_after=2)
    assert run(tmp_path / "resumed") == whole  # λ (and the last update step) come back from the checkpoint
