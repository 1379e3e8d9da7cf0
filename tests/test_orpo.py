"""ORPO (issue #6): the odds-ratio loss on hand values, against TRL's ORPO on the same log-probs (test-only), the
prompt-masking difference from TRL's NLL, and a few training steps on a tiny model."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from safealign.losses.preference import log1mexp, orpo_log_odds, orpo_odds_ratio_loss


def _by_hand(c: float, r: float) -> float:
    """−log σ(log(p_c/(1−p_c)) − log(p_r/(1−p_r))), p = exp(mean log-prob), in plain floats."""
    pc, pr = math.exp(c), math.exp(r)
    log_odds = math.log(pc / (1 - pc)) - math.log(pr / (1 - pr))
    return math.log(1 + math.exp(-log_odds))


def test_odds_ratio_loss_by_hand_and_ln2_at_equal_likelihoods():
    chosen, rejected = torch.tensor([-1.0, -0.2, -3.0]), torch.tensor([-2.0, -0.9, -0.5])
    expected = [_by_hand(c, r) for c, r in zip(chosen.tolist(), rejected.tolist())]
    assert orpo_odds_ratio_loss(chosen, rejected).tolist() == pytest.approx(expected, rel=1e-6)
    assert orpo_odds_ratio_loss(torch.tensor([-0.7]), torch.tensor([-0.7])).item() == pytest.approx(math.log(2))
    # a more likely chosen response gives a smaller loss: the sign is right
    assert orpo_odds_ratio_loss(torch.tensor([-0.5]), torch.tensor([-2.0])) < math.log(2)
    x = torch.tensor([-1e-6, -0.5, -0.7, -5.0, -40.0])
    assert torch.allclose(log1mexp(x), torch.log(1 - torch.exp(x.double())).float(), rtol=1e-5)


def test_the_odds_ratio_term_matches_trl_on_the_same_log_probs():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    torch.manual_seed(0)
    chosen, rejected = -torch.rand(16) * 3, -torch.rand(16) * 3
    beta = 0.2
    trainer = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device="cpu"))
    trl_losses, _, _, _, trl_log_odds = ORPOTrainer.odds_ratio_loss(trainer, chosen, rejected)
    # TRL returns β·log σ(·) per pair and subtracts its mean: the same as adding β·our loss
    assert torch.allclose(-trl_losses, beta * orpo_odds_ratio_loss(chosen, rejected), atol=1e-6)
    assert orpo_log_odds(chosen, rejected).mean().item() == pytest.approx(trl_log_odds.item(), abs=1e-6)


def _pairs_batch(tiny_llama):
    from safealign.data.formats import collate_pairs, tokenize_pair
    from safealign.data.prompts import ALPACA
    from safealign.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    pairs = [{"prompt": f"question {i}", "chosen": "a kind and helpful answer", "rejected": "go away"} for i in range(4)]
    return tok, collate_pairs([tokenize_pair(tok, p, 64, ALPACA) for p in pairs], tok.pad_token_id)


def test_average_log_probs_equal_trl_and_the_nll_differs_only_by_the_prompt_tokens(tiny_llama):
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    from safealign.methods.orpo import orpo_terms
    from safealign.models import load_causal_lm

    tok, batch = _pairs_batch(tiny_llama)
    model = load_causal_lm(str(tiny_llama)).eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, _, log_odds = orpo_terms(model, batch)
        trl_average = ORPOTrainer.get_batch_logps(logits, batch["labels"], average_log_prob=True)
        half = trl_average.shape[0] // 2
        assert torch.allclose(log_odds, orpo_log_odds(trl_average[:half], trl_average[half:]), atol=1e-5)
        # TRL's NLL: cross-entropy over every non-padding token of the chosen rows, prompt included
        full_labels = torch.where(batch["attention_mask"] == 1, batch["input_ids"], -100)
        trl_nll = F.cross_entropy(logits[:half, :-1].flatten(0, 1), full_labels[:half, 1:].flatten())
        # ours with the prompt unmasked is exactly TRL's; with the prompt masked (the default) it is not
        unmasked, _, _ = orpo_terms(model, {**batch, "labels": full_labels})
        assert unmasked.item() == pytest.approx(trl_nll.item(), rel=1e-5)
        assert abs(nll.item() - trl_nll.item()) > 1e-3


def test_orpo_training_raises_the_chosen_over_rejected_log_odds(tiny_llama, tmp_path):
    from safealign.data.formats import collate_pairs, tokenize_pair
    from safealign.data.prompts import ALPACA
    from safealign.data.streams import BatchStream
    from safealign.loop import TrainConfig, make_accelerator, train
    from safealign.methods.orpo import ORPO, ORPOConfig, orpo_terms
    from safealign.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    pairs = [{"prompt": f"question {i}", "chosen": "a kind and helpful answer", "rejected": "go away now"} for i in range(8)]
    features = [tokenize_pair(tok, p, 64, ALPACA) for p in pairs]
    torch.manual_seed(0)
    model = load_causal_lm(str(tiny_llama))
    batch = collate_pairs(features, tok.pad_token_id)
    with torch.no_grad():
        before = orpo_terms(model.eval(), batch)[2].mean().item()
    stream = BatchStream(features, 4, tok.pad_token_id, seed=0, collate_fn=collate_pairs)
    cfg = TrainConfig(lr=5e-3, max_steps=10, batch_size=4, log_every=1)
    result = train(model, ORPO(ORPOConfig(), 10), {"train": stream}, cfg, tmp_path / "run", make_accelerator(cfg), seed=0)
    with torch.no_grad():
        after = orpo_terms(result["model"].eval(), batch)[2].mean().item()
    assert after > before + 0.5
    assert math.isfinite(result["final_loss"])
