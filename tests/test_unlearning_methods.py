"""The unlearning methods of issue #4 beyond GA / GradDiff / NPO / GA+KL / SimNPO: FT, SOUL's KL, CL, IDK, RL and
RMU. Hand-computed loss values, the forget-answer rewrites (seeded, questions kept, wired into the unlearning
streams), RMU's control vector and activation losses on a tiny model's hooked layer, and a few training steps of
each method."""

import math

import pytest
import torch

from safealign.errors import ConfigError, DataError
from tests.conftest import write_jsonl

NEW_METHODS = ["ft", "kl", "cl", "idk", "rl", "rmu"]


# ------------------------------------------------------------------------------------------ helpers


def _rows(n: int, prefix: str, answer=lambda i: f"answer {i}") -> list[dict]:
    from safealign.data.common import example

    return [example(f"{prefix} question {i}", answer(i), index=i) for i in range(n)]


def _tiny_model(tiny_llama, lora: bool):
    from safealign.models import load_causal_lm

    torch.manual_seed(0)
    model = load_causal_lm(str(tiny_llama))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    else:
        model.requires_grad_(True)
    return model


def _batch(tok, texts: list[str]) -> dict:
    from safealign.data.formats import collate, tokenize_example
    from safealign.data.prompts import ALPACA

    rows = [{"instruction": t, "input": "", "output": "the film is good"} for t in texts]
    return collate([tokenize_example(tok, r, 64, ALPACA) for r in rows], tok.pad_token_id)


class Repeat:
    """A stream that yields the same batch forever."""

    def __init__(self, batch):
        self.batch = batch

    def __next__(self):
        return self.batch


# ------------------------------------------------------------------------------------------ SOUL's KL term


def soul_kl_loss(p, q):
    """What SOUL's `kl_loss` (src/unlearn/KL.py) computes: −Σ_v p·log(q + 1e-12), averaged over every (b, t),
    p the policy's softmax and q the reference's."""
    return (-(p * (q + 1e-12).log()).sum(dim=-1)).mean()


def test_reference_divergence_by_hand_and_against_souls_code():
    from safealign.losses.unlearning import reference_divergence

    # one sample, one position, V = 2: p_θ = (1/2, 1/2), p_ref = (3/4, 1/4)
    policy, ref = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[math.log(3.0), 0.0]]])
    mask = torch.ones(1, 1)
    ce = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    kl = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert reference_divergence(policy, ref, mask, "cross_entropy").item() == pytest.approx(ce, rel=1e-6)
    assert reference_divergence(policy, ref, mask, "kl").item() == pytest.approx(kl, rel=1e-6)
    # policy == reference: the KL is 0, SOUL's cross-entropy is the entropy (ln 2 here), not 0
    assert reference_divergence(policy, policy, mask, "kl").item() == pytest.approx(0.0, abs=1e-7)
    assert reference_divergence(policy, policy, mask, "cross_entropy").item() == pytest.approx(math.log(2), rel=1e-6)

    torch.manual_seed(0)
    pol, rf = torch.randn(3, 5, 7), torch.randn(3, 5, 7)
    full = torch.ones(3, 5)
    ours = reference_divergence(pol, rf, full, "cross_entropy").mean()  # no padding: equals SOUL's mean over B·T
    assert ours.item() == pytest.approx(soul_kl_loss(pol.softmax(-1), rf.softmax(-1)).item(), rel=1e-5)
    assert reference_divergence(pol, rf, full, "kl").min() > 0
    # padding is masked per sample, even NaN logits there
    pol[0, 3:] = float("nan")
    mask = full.clone()
    mask[0, 3:] = 0
    per_sample = reference_divergence(pol, rf, mask, "kl")
    assert torch.isfinite(per_sample).all()
    assert per_sample[0].item() == pytest.approx(reference_divergence(pol[:1, :3], rf[:1, :3], full[:1, :3], "kl").item())
    with pytest.raises(ValueError, match="divergence"):
        reference_divergence(pol, rf, full, "js")


def test_kl_method_at_the_start_weighs_the_two_sets_terms_with_the_right_signs(tiny_llama, tmp_path):
    """Policy == reference at step 0: `kl` gives D = 0 on both sets; `cross_entropy` (SOUL's code) gives the
    policy's entropy, so the loss is −γ·H̄_f + H̄_r (per-sample mean over non-padding positions, then batch mean)."""
    from safealign.methods.base import MethodContext
    from safealign.methods.unlearning import KL, KLConfig
    from safealign.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    model = _tiny_model(tiny_llama, lora=True)
    forget, retain = _batch(tok, ["how can I hurt my neighbour"]), _batch(tok, ["good", "answer the question below"])
    streams = {"forget": Repeat(forget), "retain": Repeat(retain)}

    def mean_entropy(batch) -> float:
        with torch.no_grad():
            logp = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
        h = -(logp.exp() * logp).sum(-1)  # (B, T)
        m = batch["attention_mask"].bool()
        return torch.stack([h[b][m[b]].mean() for b in range(h.shape[0])]).mean().item()

    method = KL(KLConfig(gamma=0.5))
    method.setup(model, streams, MethodContext(tmp_path))
    out = method.step(model, streams, 0)
    assert out.loss.item() == pytest.approx(-0.5 * mean_entropy(forget) + mean_entropy(retain), rel=1e-5)
    exact = KL(KLConfig(gamma=0.5, divergence="kl"))
    exact.setup(model, streams, MethodContext(tmp_path))
    out = exact.step(model, streams, 0)
    assert out.metrics["forget_divergence"] == pytest.approx(0.0, abs=1e-6)
    assert out.metrics["retain_divergence"] == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------ the rewrites


def test_refusal_rewrite_keeps_questions_and_is_seeded():
    from safealign.methods.unlearning_rewrite import CL, IDK, REFUSALS

    forget, retain = _rows(40, "forget"), _rows(5, "retain")
    cfg = IDK.Config()
    out = IDK.rewrite_forget(forget, retain, cfg, seed=3)
    assert [e["instruction"] for e in out] == [e["instruction"] for e in forget]
    assert all(e["output"] in REFUSALS for e in out)
    assert [e["meta"]["original_output"] for e in out] == [e["output"] for e in forget]
    assert forget[0]["output"] == "answer 0"  # the input rows are not modified
    assert out == IDK.rewrite_forget(forget, retain, cfg, seed=3)
    assert [e["output"] for e in out] != [e["output"] for e in IDK.rewrite_forget(forget, retain, cfg, seed=4)]
    assert len({e["output"] for e in out}) > 10  # drawn across the list, not one string
    mine = CL.rewrite_forget(forget, [], CL.Config(refusals=["no idea", "cannot say"]), seed=3)
    assert {e["output"] for e in mine} == {"no idea", "cannot say"}


def test_rl_rewrite_draws_other_retain_answers_deterministically():
    from safealign.methods.unlearning_rewrite import RL

    forget = _rows(30, "forget", answer=lambda i: f"shared {i % 3}")
    retain = _rows(6, "retain", answer=lambda i: f"shared {i % 3}")  # half of the answers collide with forget's
    out = RL.rewrite_forget(forget, retain, RL.Config(), seed=0)
    answers = {r["output"] for r in retain}
    assert [e["instruction"] for e in out] == [e["instruction"] for e in forget]
    assert all(e["output"] in answers and e["output"] != f["output"] for e, f in zip(out, forget))
    assert out == RL.rewrite_forget(forget, retain, RL.Config(), seed=0)
    assert [e["output"] for e in out] != [e["output"] for e in RL.rewrite_forget(forget, retain, RL.Config(), seed=1)]
    text = [{**e, "meta": {"raw_text": True}} for e in forget]
    with pytest.raises(DataError, match="rl: the forget set is raw text"):
        RL.rewrite_forget(text, retain, RL.Config(), seed=0)
    with pytest.raises(DataError, match="forget row 0: every retain answer equals its answer"):
        RL.rewrite_forget(forget[:1], _rows(2, "retain", answer=lambda i: "shared 0"), RL.Config(), seed=0)


def test_the_unlearning_streams_tokenize_the_rewritten_answers(tiny_llama, tmp_path):
    from safealign.config import build
    from safealign.models import load_tokenizer
    from safealign.data.training import StreamSettings, unlearn_streams
    from safealign.methods import METHODS
    from safealign.stages.train import TrainStage

    qa = lambda n, what: [{"question": f"{what} question {i}", "answer": f"the film is good {i}"} for i in range(n)]  # noqa: E731
    write_jsonl(tmp_path / "tofu" / "forget10.jsonl", qa(4, "forget"))
    write_jsonl(tmp_path / "tofu" / "retain90.jsonl", [{"question": f"q {i}", "answer": f"a kind answer {i}"} for i in range(6)])
    tok = load_tokenizer(str(tiny_llama))

    def forget_answers(method: str) -> list[str]:
        cfg = build(TrainStage, {"model": {"path": str(tiny_llama)}, "seed": 5, "method": {"name": method},
                                 "data": {"forget": {"source": "tofu", "path": str(tmp_path / "tofu"), "split": "forget10"},
                                          "retain": {"source": "tofu", "path": str(tmp_path / "tofu"), "split": "retain90"}}})
        settings = StreamSettings(tok, cfg.model.max_length, cfg.train.batch_size, cfg.train.shuffle, cfg.seed)
        streams, _ = unlearn_streams(cfg.data, METHODS[method], cfg.method, settings)
        assert streams["train"] is streams["forget"] and "retain" in streams
        return sorted(tok.decode([t for t in f["labels"] if t != -100], skip_special_tokens=True).strip()
                      for f in streams["forget"].features)

    from safealign.methods.unlearning_rewrite import REFUSALS

    assert forget_answers("ga") == [f"the film is good {i}" for i in range(4)]
    assert all(a in REFUSALS for a in forget_answers("idk"))
    assert all(a.startswith("a kind answer") for a in forget_answers("rl"))
    assert forget_answers("rl") == forget_answers("rl")  # seeded


def test_forget_max_length_cuts_forget_rows_and_leaves_retain_at_the_model_length(tiny_llama, tmp_path):
    from safealign.config import build
    from safealign.data.training import StreamSettings, unlearn_streams
    from safealign.methods import METHODS
    from safealign.models import load_tokenizer
    from safealign.stages.train import TrainStage

    long_text = " ".join(f"word{i}" for i in range(60))
    write_jsonl(tmp_path / "forget.jsonl", [{"text": long_text}] * 3)
    write_jsonl(tmp_path / "retain.jsonl", [{"text": long_text}] * 3)
    tok = load_tokenizer(str(tiny_llama))

    def lengths(forget_max_length: int) -> tuple[set, set]:
        cfg = build(TrainStage, {"model": {"path": str(tiny_llama), "max_length": 40}, "method": {"name": "rmu"},
                                 "data": {"forget": {"source": "text", "path": str(tmp_path / "forget.jsonl")},
                                          "retain": {"source": "text", "path": str(tmp_path / "retain.jsonl")},
                                          "forget_max_length": forget_max_length}})
        settings = StreamSettings(tok, cfg.model.max_length, cfg.train.batch_size, cfg.train.shuffle, cfg.seed)
        streams, _ = unlearn_streams(cfg.data, METHODS["rmu"], cfg.method, settings)
        return ({len(f["input_ids"]) for f in streams["forget"].features},
                {len(f["input_ids"]) for f in streams["retain"].features})

    assert lengths(0) == ({40}, {40})  # model.max_length for both
    assert lengths(24) == ({24}, {40})  # the WMDP code's per-corpus forget length; retain keeps the model's


# ------------------------------------------------------------------------------------------ RMU


@pytest.mark.parametrize("lora", [False, True])
def test_rmu_losses_by_hand_on_the_hooked_layer(tiny_llama, tmp_path, lora):
    from safealign.methods.base import MethodContext
    from safealign.methods.rmu import RMU, RMUConfig
    from safealign.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    model = _tiny_model(tiny_llama, lora)
    forget = _batch(tok, ["how can I hurt my neighbour"])  # one row: no padding
    retain = _batch(tok, ["the film is good", "answer the question below please"])  # padded
    cfg = RMUConfig(layer=0, steering_coeff=3.0, alpha=10.0)
    torch.manual_seed(11)
    method = RMU(cfg)
    method.setup(model, {}, MethodContext(tmp_path))
    u = method.control_vec
    assert u.shape == (32,) and u.norm().item() == pytest.approx(1.0, rel=1e-6) and (u >= 0).all()

    out = method.step(model, {"forget": Repeat(forget), "retain": Repeat(retain)}, 0)
    with torch.no_grad():  # hidden_states[ℓ + 1] is the output of decoder layer ℓ
        h = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"],
                  output_hidden_states=True).hidden_states[1][0]  # (T, H)
    expected = ((h - 3.0 * u) ** 2).mean().item()
    assert out.metrics["forget_loss"] == pytest.approx(expected, rel=1e-5)
    assert out.metrics["retain_loss"] == pytest.approx(0.0, abs=1e-10)  # the policy still is the reference
    assert out.loss.requires_grad

    # after an update the retain term is α · the per-sample mean over NON-padding tokens of (1/H)‖h − h_ref‖²
    out.loss.backward()
    with torch.no_grad():
        for q in model.parameters():
            if q.grad is not None:
                q -= 0.5 * q.grad
    out = method.step(model, {"forget": Repeat(forget), "retain": Repeat(retain)}, 1)
    with torch.no_grad():
        ids, am = retain["input_ids"], retain["attention_mask"]
        h = model(input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states[1]
        if lora:
            with model.disable_adapter():
                h_ref = model(input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states[1]
        else:
            h_ref = method.reference.frozen(input_ids=ids, attention_mask=am, output_hidden_states=True).hidden_states[1]
    per_token = ((h - h_ref) ** 2).mean(dim=-1)  # (B, T)
    assert am.sum() < am.numel()  # the batch is padded
    expected = torch.stack([per_token[b][am[b].bool()].mean() for b in range(2)]).mean().item() * 10.0
    assert expected > 0 and out.metrics["retain_loss"] == pytest.approx(expected, rel=1e-4)

    # u is drawn once (seeded), kept across steps, and a resumed run takes the saved one
    method.step(model, {"forget": Repeat(forget), "retain": Repeat(retain)}, 1)
    assert torch.equal(method.control_vec, u)
    torch.manual_seed(11)
    again = RMU(cfg)
    again.setup(model, {}, MethodContext(tmp_path))
    assert torch.equal(again.control_vec, u)
    torch.manual_seed(12)
    resumed = RMU(cfg)
    resumed.setup(model, {}, MethodContext(tmp_path))
    assert not torch.equal(resumed.control_vec, u)
    resumed.load_state_dict(method.state_dict())
    assert torch.equal(resumed.control_vec, u)


def test_rmu_setup_rejects_a_layer_the_model_lacks(tiny_llama, tmp_path):
    from safealign.methods.base import MethodContext
    from safealign.methods.rmu import RMU, RMUConfig

    with pytest.raises(ConfigError, match="layer 7 but the model has 2 decoder layers"):
        RMU(RMUConfig()).setup(_tiny_model(tiny_llama, lora=True), {}, MethodContext(tmp_path))
    with pytest.raises(ConfigError, match="no trainable parameter in layers"):
        RMU(RMUConfig(layer=1, train_layers=[1], train_modules=["gate_proj"])).setup(
            _tiny_model(tiny_llama, lora=True), {}, MethodContext(tmp_path))


# ------------------------------------------------------------------------------------------ training


def _streams(tok, name: str):
    from safealign.data.formats import tokenize_example
    from safealign.data.prompts import ALPACA
    from safealign.data.streams import BatchStream
    from safealign.methods import METHODS

    forget = _rows(4, "forget", answer=lambda i: "the film is good")
    retain = _rows(4, "retain", answer=lambda i: f"a kind answer {i}")
    rewrite = getattr(METHODS[name], "rewrite_forget", None)
    if rewrite is not None:
        forget = rewrite(forget, retain, METHODS[name].Config(), 0)
    stream = lambda rows, seed: BatchStream([tokenize_example(tok, r, 64, ALPACA) for r in rows], 2, tok.pad_token_id, seed)  # noqa: E731
    streams = {"forget": stream(forget, 0), "retain": stream(retain, 1)}
    streams["train"] = streams["forget"]
    return streams


@pytest.mark.parametrize("name", NEW_METHODS)
def test_a_few_steps_of_each_method_train_the_adapter(name, tiny_llama, tmp_path):
    import json

    from safealign.loop import TrainConfig, make_accelerator, train
    from safealign.methods import METHODS
    from safealign.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    model = _tiny_model(tiny_llama, lora=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = {"rmu": {"layer": 1, "steering_coeff": 2.0, "alpha": 10.0}}.get(name, {})
    method = METHODS[name](METHODS[name].Config(**settings), 3)
    cfg = TrainConfig(lr=1e-2, max_steps=3, batch_size=2, log_every=1)
    result = train(model.train(), method, _streams(tok, name), cfg, tmp_path / "run", make_accelerator(cfg), seed=0)
    assert math.isfinite(result["final_loss"])
    after = dict(result["model"].named_parameters())
    changed = {n for n, p in after.items() if not torch.equal(p.detach(), before[n])}
    assert changed and all("lora_" in n for n in changed)  # the adapter trained, the base weights did not
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] > 0  # epochs count forget batches for every method, FT included


def test_rmu_train_layers_freeze_everything_else(tiny_llama, tmp_path):
    from safealign.loop import TrainConfig, make_accelerator, train
    from safealign.methods.rmu import RMU, RMUConfig
    from safealign.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    model = _tiny_model(tiny_llama, lora=False)  # full fine-tuning, as the WMDP code
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = RMU(RMUConfig(layer=1, steering_coeff=2.0, alpha=10.0, train_layers=[0], train_modules=["mlp.down_proj"]))
    cfg = TrainConfig(lr=1e-2, max_steps=2, batch_size=2, weight_decay=0.1)
    result = train(model.train(), method, _streams(tok, "rmu"), cfg, tmp_path / "run", make_accelerator(cfg), seed=0)
    changed = {n for n, p in result["model"].named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed == {"model.layers.0.mlp.down_proj.weight"}  # weight decay did not touch the frozen ones


# ------------------------------------------------------------------------------------------ config


def test_config_names_the_closest_method_and_key_and_checks_the_streams():
    from safealign.config import build
    from safealign.stages.train import TrainStage

    forget = {"source": "tofu", "path": "mini:tofu", "split": "forget10"}
    retain = {"source": "tofu", "path": "mini:tofu", "split": "retain90"}
    with pytest.raises(ConfigError, match="did you mean 'rmu'"):
        build(TrainStage, {"method": {"name": "rmv"}})
    with pytest.raises(ConfigError, match="did you mean 'method.steering_coeff'"):
        build(TrainStage, {"method": {"name": "rmu", "steering_coef": 3.0}})
    with pytest.raises(ConfigError, match="divergence: 'js' is not one of cross_entropy, kl"):
        build(TrainStage, {"method": {"name": "kl", "divergence": "js"}})
    with pytest.raises(ConfigError, match="refusals"):
        build(TrainStage, {"method": {"name": "idk", "refusals": []}})
    for name in ("ft", "kl", "idk", "rl", "rmu"):
        with pytest.raises(ConfigError, match=f"data.retain: method '{name}' needs a retain set"):
            build(TrainStage, {"method": {"name": name}, "data": {"forget": forget}})
    assert build(TrainStage, {"method": {"name": "cl"}, "data": {"forget": forget}}).method.registry_name == "cl"
    stage = build(TrainStage, {"method": {"name": "rmu", "layer": 3, "train_layers": [1, 2, 3]},
                               "data": {"forget": forget, "retain": retain}})
    assert (stage.method.layer, stage.method.train_layers, stage.method.alpha) == (3, [1, 2, 3], 1200.0)


def test_simnpo_weighs_forget_and_retain_as_the_authors(tiny_llama, recwarn):
    """SimNPO's loss is w_f · forget + w_r · retain with the authors' forget10 defaults (β 4.5, w_f 0.125, w_r 1);
    the old `gamma` key still sets the retain weight."""
    from safealign.config import build
    from safealign.losses.unlearning import sequence_logps, simnpo_loss
    from safealign.methods.unlearning import SimNPO, SimNPOConfig, answer_terms
    from safealign.methods.base import causal_lm_loss
    from safealign.models import load_tokenizer

    cfg = SimNPOConfig()
    assert (cfg.beta, cfg.forget_weight, cfg.retain_weight) == (4.5, 0.125, 1.0)
    assert build(SimNPOConfig, {"gamma": 2.0}).retain_weight == 2.0
    tok = load_tokenizer(str(tiny_llama))
    model = _tiny_model(tiny_llama, lora=False)
    forget, retain = _batch(tok, ["who wrote it"]), _batch(tok, ["what is the capital"])
    with torch.no_grad():
        # β 0.1: at β 4.5 the untrained model's forget term is already ~0 (ℓ ≈ −7), which would hide the weights
        f = simnpo_loss(sequence_logps(*answer_terms(model, forget), "token_mean"), 0.1, 0.0).mean()
        r = causal_lm_loss(model, retain)
        out = SimNPO(SimNPOConfig(beta=0.1), 1).step(model, {"forget": Repeat(forget), "retain": Repeat(retain)}, 0)
    assert out.loss.item() == pytest.approx(0.125 * f.item() + r.item(), rel=1e-5)
    assert f.item() > 0.2 and r.item() > 0.2  # both terms matter, so the old forget + γ · retain would differ
