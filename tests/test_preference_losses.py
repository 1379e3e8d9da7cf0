"""Golden values for losses/preference.py and losses/reward.py: every expected value is computed by hand with
math.log / math.exp, so a flipped sign or a wrong scale fails; TRL's DPO is compared on the same inputs."""

import collections
import math
import types

import pytest
import torch

from safealign.losses.preference import (
    dpo_loss,
    lagrange_update,
    margin_adaptive_beta,
    per_token_kl,
    safe_mm_dpo_total,
)
from safealign.losses.reward import cost_pair_loss, pair_accuracy, reward_pair_loss, sign_accuracy

from tests.conftest import LN2, softplus, t


# ---------------------------------------------------------------- DPO


def test_dpo_sigmoid_at_zero_margin_is_ln2_for_any_beta_and_smoothing():
    z = t(-4.0, -2.0)
    for beta in (0.1, 2.0):
        for eps in (0.0, 0.3):
            losses, rc, rr = dpo_loss(z, z - 1, z + 3, z + 2, beta, label_smoothing=eps)  # h = (−3) − (−3) = 0
            assert losses.tolist() == pytest.approx([LN2, LN2])


def test_dpo_sigmoid_hand_values_and_rewards():
    # β = 0.1: h = (−5 + 5.5) − (−6 + 5) = 1.5 -> −log σ(0.15); rewards β·0.5 and β·(−1)
    losses, rc, rr = dpo_loss(t(-5.0), t(-6.0), t(-5.5), t(-5.0), 0.1)
    assert losses.item() == pytest.approx(softplus(-0.15))
    assert (rc.item(), rr.item()) == pytest.approx((0.05, -0.1))
    # β = 0.5: h = (−2 + 1) − (−1 + 3) = −3 -> −log σ(−1.5), larger than ln 2 (the policy prefers y_l)
    losses, rc, rr = dpo_loss(t(-2.0), t(-1.0), t(-1.0), t(-3.0), 0.5)
    assert losses.item() == pytest.approx(softplus(1.5))
    assert losses.item() > LN2
    assert (rc.item(), rr.item()) == pytest.approx((-0.5, 1.0))


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = t(-3.0).requires_grad_(), t(-3.0).requires_grad_()
    losses, rc, rr = dpo_loss(pc, pr, t(-3.0), t(-3.0), 0.1)
    losses.sum().backward()
    # d/dpc −log σ(β h) = −β σ(−β h) = −0.05 at h = 0
    assert pc.grad.item() == pytest.approx(-0.05)
    assert pr.grad.item() == pytest.approx(0.05)
    assert not rc.requires_grad and not rr.requires_grad


def test_dpo_per_sample_beta_equals_scalar_rows():
    pc, pr, rc, rr = t(-5.0, -2.0, -7.0), t(-6.0, -1.0, -4.0), t(-5.5, -1.0, -6.0), t(-5.0, -3.0, -5.0)
    betas = [0.1, 0.5, 2.0]
    for loss_type in ("sigmoid", "ipo", "hinge"):
        batched = dpo_loss(pc, pr, rc, rr, t(*betas), loss_type, label_smoothing=0.1)
        for i, beta in enumerate(betas):
            row = dpo_loss(pc[i:i + 1], pr[i:i + 1], rc[i:i + 1], rr[i:i + 1], beta, loss_type, label_smoothing=0.1)
            for out_b, out_r in zip(batched, row):
                assert out_b[i].item() == pytest.approx(out_r.item())


def test_dpo_label_smoothing_hand_value():
    # β = 1, h = 2, ε = 0.2: 0.8·(−log σ(2)) + 0.2·(−log σ(−2))
    losses, _, _ = dpo_loss(t(0.0), t(-2.0), t(0.0), t(0.0), 1.0, label_smoothing=0.2)
    assert losses.item() == pytest.approx(0.8 * softplus(-2.0) + 0.2 * softplus(2.0))


def test_dpo_ipo_and_hinge_hand_values():
    args = (t(-5.0), t(-6.0), t(-5.5), t(-5.0))  # h = 1.5
    assert dpo_loss(*args, 0.1, "ipo")[0].item() == pytest.approx((1.5 - 5.0) ** 2)  # 1/(2β) = 5
    assert dpo_loss(*args, 1 / 3, "ipo")[0].item() == pytest.approx(0.0)  # h = 1/(2β) is IPO's optimum
    assert dpo_loss(*args, 0.1, "hinge")[0].item() == pytest.approx(0.85)  # 1 − 0.15
    assert dpo_loss(*args, 1.0, "hinge")[0].item() == 0.0  # βh = 1.5 ≥ 1: no loss


def test_dpo_unknown_loss_type_raises():
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(t(0.0), t(0.0), t(0.0), t(0.0), 0.1, "sigmod")


class _Accelerator:
    device = torch.device("cpu")
    gather = gather_for_metrics = staticmethod(lambda x: x)


def _trl_dpo(loss_type, beta, pc, pr, rc, rr, n_chosen, n_rejected):
    """TRL 1.16 inlines its DPO losses in `DPOTrainer._compute_loss`; run that method unbound on a stand-in holding
    the attributes it reads, with a fake model whose token log-probs sum to the given sequence log-probs and with
    precomputed reference log-probs. Returns TRL's batch-mean loss and its logged metrics."""
    from trl import DPOTrainer

    B, T = pc.shape[0], max(n_chosen + n_rejected) + 1
    completion_mask = torch.zeros(2 * B, T, dtype=torch.long)
    for i, n in enumerate(n_chosen + n_rejected):
        completion_mask[i, T - n:] = 1
    log_probs = torch.zeros(2 * B, T - 1, dtype=pc.dtype)
    log_probs[:, -1] = torch.cat([pc, pr])  # TRL sums log_probs over positions; put each sequence's sum in one
    zeros = torch.zeros(2 * B, T - 1)
    outputs = types.SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())
    model = type("FakeModel", (), {"training": True, "__call__": lambda self, **kw: outputs})()
    stand_in = types.SimpleNamespace(
        model=model, accelerator=_Accelerator(), aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True,
        f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=0.0,
        use_weighting=False, _metrics=collections.defaultdict(lambda: collections.defaultdict(list)),
        _total_train_tokens=0, _tp_size=1)
    ids = torch.zeros(2 * B, T, dtype=torch.long)
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), completion_mask=completion_mask,
                  ref_chosen_logps=rc, ref_rejected_logps=rr)
    loss = DPOTrainer._compute_loss(stand_in, model, inputs, return_outputs=False)
    return loss.item(), stand_in._metrics["train"]


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
def test_dpo_matches_trl(loss_type):
    """Same sequence log-probs through TRL's own code (per row and as a batch mean). TRL's ipo divides each
    log-ratio by its completion length, so ours gets per-token-mean log-probs, which is the caller's job here."""
    pytest.importorskip("trl")
    beta = 0.1
    pc, pr, rc, rr = t(-5.0, -7.0, -3.0), t(-6.0, -4.0, -9.0), t(-5.5, -6.0, -4.0), t(-5.0, -5.0, -8.0)
    n_chosen, n_rejected = [2, 3, 4], [5, 1, 2]
    if loss_type == "ipo":
        nc, nr = t(*n_chosen), t(*n_rejected)
        ours = dpo_loss(pc / nc, pr / nr, rc / nc, rr / nr, beta, "ipo")[0]
    else:
        ours, our_rc, our_rr = dpo_loss(pc, pr, rc, rr, beta, loss_type)
    trl_mean, metrics = _trl_dpo(loss_type, beta, pc, pr, rc, rr, n_chosen, n_rejected)
    assert ours.mean().item() == pytest.approx(trl_mean, rel=1e-6)
    for i in range(3):
        s = slice(i, i + 1)
        trl_row, _ = _trl_dpo(loss_type, beta, pc[s], pr[s], rc[s], rr[s], n_chosen[s], n_rejected[s])
        assert ours[i].item() == pytest.approx(trl_row, rel=1e-6)
    if loss_type != "ipo":  # TRL logs β·(sequence-sum log-ratio) as its rewards for every loss type
        assert our_rc.mean().item() == pytest.approx(metrics["rewards/chosen"][0], rel=1e-6)
        assert our_rr.mean().item() == pytest.approx(metrics["rewards/rejected"][0], rel=1e-6)


# ---------------------------------------------------------------- MM-DPO β, KL, λ, total


def test_margin_adaptive_beta():
    beta = margin_adaptive_beta(t(0.0, 1e4, 1.0, -0.1, -1.0), beta_ori=0.1, w=0.5, k=2.0)
    assert beta[0].item() == pytest.approx(0.1)  # δ = 0 -> β_ori
    assert beta[1].item() == pytest.approx(0.1 * 1.5)  # δ -> ∞ -> β_ori (1 + w)
    assert beta[2].item() == pytest.approx(0.1 * (1 + 0.5 * (1 - math.exp(-2.0))))
    assert beta[3].item() == pytest.approx(0.1 * (1 + 0.5 * (1 - math.exp(0.2))))  # below β_ori, above the clamp
    assert beta[3].item() < 0.1
    assert beta[4].item() == pytest.approx(1e-3)  # 0.1·(1 + 0.5(1 − e²)) < 0 -> clamped
    assert margin_adaptive_beta(t(-1.0), 0.1, 0.5, 2.0, min_beta=0.02).item() == pytest.approx(0.02)


def test_per_token_kl():
    logp = torch.log(t(0.2, 0.5, 0.3)).unsqueeze(0)  # (1, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert per_token_kl(logp, logp, mask).item() == 0.0
    # one token: π = 0.5, π_ref = 0.25 -> r = ln 0.5, k3 = 0.5 − 1 − ln 0.5
    hand = 0.5 - 1 - math.log(0.5)
    pol, ref = torch.log(t(0.5, 0.9, 0.5)).unsqueeze(0), torch.log(t(0.25, 0.1, 0.25)).unsqueeze(0)
    one = torch.tensor([[True, False, False]])
    assert per_token_kl(pol, ref, one).item() == pytest.approx(hand)
    # masked tokens ignored; the result is a token mean, not a sum (two equal tokens give the one-token value)
    two = torch.tensor([[1, 0, 1]])
    assert per_token_kl(pol, ref, two).item() == pytest.approx(hand)
    assert per_token_kl(pol, torch.log(t(0.25, 0.7, 0.25)).unsqueeze(0), two).item() == pytest.approx(hand)
    assert per_token_kl(pol, ref, torch.zeros(1, 3)).item() == 0.0
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    assert (per_token_kl(a, b, torch.ones(4, 6)) > 0).all()


def test_per_token_kl_is_unbiased_for_kl_policy_to_ref():
    # Tokens drawn from π: Σ_v π(v)·k3(v) = KL(π ‖ π_ref) exactly (and differs from KL(π_ref ‖ π)).
    pi, ref = t(0.9, 0.05, 0.05), t(0.2, 0.4, 0.4)
    k3 = per_token_kl(torch.log(pi).unsqueeze(1), torch.log(ref).unsqueeze(1), torch.ones(3, 1))  # one token per row
    kl = sum(p * math.log(p / q) for p, q in zip(pi.tolist(), ref.tolist()))
    reverse = sum(q * math.log(q / p) for p, q in zip(pi.tolist(), ref.tolist()))
    assert (pi * k3).sum().item() == pytest.approx(kl)
    assert abs(kl - reverse) > 0.1


def test_lagrange_update_rises_falls_to_zero_and_stays_in_bounds():
    lam, trace = 0.0, []
    for cost in [2.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]:  # threshold 1, lr 0.5, λ_max 1.2
        lam = lagrange_update(lam, cost, threshold=1.0, lr=0.5, lam_max=1.2)
        assert 0.0 <= lam <= 1.2
        trace.append(lam)
    assert trace == pytest.approx([0.5, 1.0, 1.2, 0.7, 0.2, 0.0, 0.0, 1.0])
    assert isinstance(lam, float)


def test_safe_mm_dpo_total():
    h, s, kl = torch.tensor(1.0), torch.tensor(3.0), torch.tensor(0.5)
    assert safe_mm_dpo_total(h, s, kl, lam=0.0, kl_coeff=0.1).item() == pytest.approx(1.05)
    assert safe_mm_dpo_total(h, s, kl, lam=1.0, kl_coeff=0.1).item() == pytest.approx(2.05)  # (1 + 3)/2 + 0.05
    assert safe_mm_dpo_total(h, s, kl, lam=1e6, kl_coeff=0.0).item() == pytest.approx(3.0, rel=1e-5)


# ---------------------------------------------------------------- reward and cost models


def test_reward_pair_loss():
    assert reward_pair_loss(t(1.3, -2.0), t(1.3, -2.0)).tolist() == pytest.approx([LN2, LN2])
    assert reward_pair_loss(t(1.0), t(1.0), reg=0.1).item() == pytest.approx(LN2 + 0.1)  # 0.1·(1 + 1)/2
    assert reward_pair_loss(t(2.0), t(-1.0), reg=0.5).item() == pytest.approx(softplus(-3.0) + 1.25)  # 0.5·5/2
    assert reward_pair_loss(t(-1.0), t(2.0)).item() == pytest.approx(softplus(3.0))  # ranked wrong: > ln 2


def test_reward_pair_loss_batch_mean_is_safe_rlhf():
    # Transcription of safe-rlhf RewardTrainer (sequence-wise): −logσ(h − l).mean() + reg·stack([l, h])².mean()
    hi, lo = t(0.3, 2.0, -1.0), t(0.1, -0.5, 0.4)
    ref = -torch.nn.functional.logsigmoid(hi - lo).mean() + 0.2 * torch.stack([lo, hi]).square().mean()
    assert reward_pair_loss(hi, lo, reg=0.2).mean().item() == pytest.approx(ref.item())


def test_cost_pair_loss_hand_values():
    # safer is safe at −1 (wants < 0), unsafer is unsafe at 2 (wants > 0): every term already leans right
    safe, unsafe = torch.tensor([True]), torch.tensor([False])
    hand = softplus(-3.0) + softplus(-1.0) + softplus(-2.0)
    assert cost_pair_loss(t(-1.0), t(2.0), safe, unsafe).item() == pytest.approx(hand)
    assert cost_pair_loss(t(-1.0), t(2.0), safe, unsafe, reg=0.2).item() == pytest.approx(hand + 0.2 * 5 / 2)
    # both unsafe at 0.5: ranking term ln 2, both sign terms −log σ(0.5)
    both = torch.tensor([False])
    assert cost_pair_loss(t(0.5), t(0.5), both, both).item() == pytest.approx(LN2 + 2 * softplus(-0.5))
    # both safe at 0.5: the sign terms push both down, −log σ(−0.5) each
    yes = torch.tensor([True])
    assert cost_pair_loss(t(0.5), t(0.5), yes, yes).item() == pytest.approx(LN2 + 2 * softplus(0.5))
    # a safe response given a positive cost costs more than at the mirrored negative cost
    assert cost_pair_loss(t(1.0), t(2.0), safe, unsafe).item() > cost_pair_loss(t(-1.0), t(2.0), safe, unsafe).item()


def test_accuracies():
    assert pair_accuracy(t(1.0, 2.0, 3.0), t(0.0, 2.0, 4.0)) == pytest.approx(1 / 3)  # a tie counts wrong
    costs, is_safe = t(1.0, -1.0, 0.5, -0.2), torch.tensor([False, True, True, True])
    assert sign_accuracy(costs, is_safe) == pytest.approx(0.75)
