"""Golden values for losses/unlearning.py: expected values are computed by hand with math.log / math.exp, so a
flipped sign, a missing 2/β or a sum-vs-mean slip fails."""

import math

import pytest
import torch
import torch.nn.functional as F

from safealign.losses.unlearning import (
    ga_loss,
    kl_on_retain,
    npo_loss,
    rmu_loss,
    sequence_logps,
    simnpo_loss,
)

from tests.conftest import LN2, softplus, t


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


# ---------------------------------------------------------------- sequence log-probs


def test_sequence_logps_sum_and_token_mean_on_a_hand_mask():
    token_logps = t(-1.0, -2.0, -4.0, -8.0).reshape(1, 4).repeat(2, 1)
    token_logps[1, 3] = float("-inf")  # a masked position may hold anything
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]])
    assert sequence_logps(token_logps, mask, "sum").tolist() == pytest.approx([-11.0, -6.0])
    assert sequence_logps(token_logps, mask, "token_mean").tolist() == pytest.approx([-11.0 / 3, -3.0])
    empty = torch.zeros(1, 4, dtype=torch.bool)
    assert sequence_logps(token_logps[:1], empty, "token_mean").tolist() == [0.0]
    with pytest.raises(ValueError, match="token_mean"):
        sequence_logps(token_logps, mask, "mean")


# ---------------------------------------------------------------- GA


def test_ga_is_minus_nll_and_its_gradient_on_logp_is_plus_one():
    logp = t(-3.0, -0.5).requires_grad_()
    losses = ga_loss(-logp)  # nll = −log π
    assert losses.tolist() == pytest.approx([-3.0, -0.5])
    losses.sum().backward()
    assert logp.grad.tolist() == pytest.approx([1.0, 1.0])


# ---------------------------------------------------------------- NPO


@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0, 2.5])
def test_npo_at_zero_log_ratio_is_two_over_beta_ln2(beta):
    policy = t(-7.0, -1.0, -30.0)
    losses = npo_loss(policy, policy.clone(), beta)
    assert losses.shape == (3,)
    assert losses.tolist() == pytest.approx([2 / beta * LN2] * 3)


def test_npo_hand_values_at_nonzero_log_ratio():
    # β = 0.5, x = −6 − (−4) = −2: −(2/0.5)·log σ(1) = 4·softplus(−1) ≈ 1.25305 (forgotten -> below (2/β)ln 2)
    loss = npo_loss(t(-6.0), t(-4.0), 0.5).item()
    assert loss == pytest.approx(4 * softplus(-1.0))
    assert loss == pytest.approx(1.2530468, abs=1e-6)
    assert loss < 4 * LN2
    # β = 0.1, x = +3 (policy likes y more than the reference): 20·softplus(0.3) > 20·ln 2
    loss = npo_loss(t(-2.0), t(-5.0), 0.1).item()
    assert loss == pytest.approx(20 * softplus(0.3))
    assert loss > 20 * LN2
    # a (B,) β tensor applies per sample
    losses = npo_loss(t(-6.0, -2.0), t(-4.0, -5.0), t(0.5, 0.1))
    assert losses.tolist() == pytest.approx([4 * softplus(-1.0), 20 * softplus(0.3)])


def test_npo_gradient_is_two_sigmoid_beta_x():
    # dL/d log π = 2σ(βx): at β = 1, x = −2 it is 2σ(−2) ≈ 0.2384, far from GA's 1
    policy = t(-6.0).requires_grad_()
    npo_loss(policy, t(-4.0), 1.0).sum().backward()
    assert policy.grad.item() == pytest.approx(2 / (1 + math.exp(2.0)))


def test_npo_gradient_approaches_ga_gradient_as_beta_goes_to_zero():
    policy_vals, ref_vals = (-6.0, -1.0, -12.0), (-4.0, -3.0, -12.0)  # x = −2, +2, 0
    logp_ga = t(*policy_vals).requires_grad_()
    ga_loss(-logp_ga).sum().backward()  # GA's gradient on its loss −NLL = log π: +1 per sample

    logp_npo = t(*policy_vals).requires_grad_()
    npo_loss(logp_npo, t(*ref_vals), 1e-4).sum().backward()
    assert logp_npo.grad.tolist() == pytest.approx(logp_ga.grad.tolist(), abs=1e-3)
    assert logp_ga.grad.tolist() == [1.0, 1.0, 1.0]

    # and NPO itself is GA's loss plus (2/β)·ln 2 and the reference, up to (β/4)·x²
    beta, logp, ref = 1e-4, t(*policy_vals), t(*ref_vals)
    expected = 2 / beta * LN2 + (logp - ref) + beta / 4 * (logp - ref) ** 2
    assert npo_loss(logp, ref, beta).tolist() == pytest.approx(expected.tolist(), abs=1e-6)


# ---------------------------------------------------------------- SimNPO


def test_simnpo_hand_values():
    # β = 2, γ = 0, ℓ = −1: −(2/2)·log σ(2) = softplus(−2) ≈ 0.1269
    assert simnpo_loss(t(-1.0), 2.0).item() == pytest.approx(softplus(-2.0))
    # β = 2.5, γ = 1, ℓ = −0.2: −(2/2.5)·log σ(0.5 − 1) = 0.8·softplus(0.5) ≈ 0.77926
    loss = simnpo_loss(t(-0.2), 2.5, gamma=1.0).item()
    assert loss == pytest.approx(0.8 * softplus(0.5))
    assert loss == pytest.approx(0.7792616, abs=1e-6)
    # βℓ + γ = 0 gives (2/β)·ln 2, like NPO at log-ratio 0
    assert simnpo_loss(t(-0.4), 2.5, gamma=1.0).item() == pytest.approx(0.8 * LN2)


def test_simnpo_gradient_on_mean_logp_is_two_sigmoid():
    ell = t(-0.2, -3.0).requires_grad_()
    simnpo_loss(ell, 2.5, gamma=1.0).sum().backward()
    # dL/dℓ = 2σ(βℓ + γ): 2σ(0.5), 2σ(−6.5); positive, so descent lowers the forget log-prob
    assert ell.grad.tolist() == pytest.approx([2 / (1 + math.exp(-0.5)), 2 / (1 + math.exp(6.5))])


# ---------------------------------------------------------------- KL on retain


def test_kl_on_retain_is_zero_when_logits_are_equal():
    logits = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 5)
    assert kl_on_retain(logits, logits.clone(), mask).tolist() == pytest.approx([0.0] * 3, abs=1e-6)
    # a per-position shift of the logits leaves the softmax, so the KL, unchanged
    shifted = logits + torch.arange(5.0).view(1, 5, 1)
    assert kl_on_retain(shifted, logits, mask).tolist() == pytest.approx([0.0] * 3, abs=1e-5)


def test_kl_on_retain_hand_value_two_tokens_three_vocab():
    ref = [[0.5, 0.25, 0.25], [0.7, 0.2, 0.1]]
    pol = [[1 / 3, 1 / 3, 1 / 3], [0.05, 0.15, 0.8]]
    ref_logits = torch.tensor([[math.log(p) for p in row] for row in ref]).unsqueeze(0)  # (1, 2, 3)
    pol_logits = torch.tensor([[math.log(p) + 1.5 for p in row] for row in pol]).unsqueeze(0)
    got = kl_on_retain(pol_logits, ref_logits, torch.ones(1, 2)).item()
    expected = (kl(ref[0], pol[0]) + kl(ref[1], pol[1])) / 2  # KL(ref ‖ θ), a token MEAN
    reverse = (kl(pol[0], ref[0]) + kl(pol[1], ref[1])) / 2
    assert got == pytest.approx(expected, rel=1e-5)
    # the test can tell: the reversed KL and a token sum (2 × expected) are both far off
    assert abs(expected - reverse) > 0.05 and expected > 0.05


def test_kl_on_retain_ignores_padding():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 4, 5, generator=g)
    pol = torch.randn(2, 4, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    base = kl_on_retain(pol, ref, mask)
    changed_pol, changed_ref = pol.clone(), ref.clone()
    changed_pol[1, 2:] = torch.randn(2, 5, generator=g) * 10
    changed_ref[1, 3] = float("nan")
    assert torch.equal(kl_on_retain(changed_pol, changed_ref, mask), base)
    # sample 1 is the mean over its two unmasked tokens only
    assert base[1].item() == pytest.approx(kl_on_retain(pol[1:, :2], ref[1:, :2], torch.ones(1, 2)).item())
    assert base.shape == (2,)


def test_kl_on_retain_matches_torch_kl_div_direction():
    g = torch.Generator().manual_seed(2)
    ref, pol = torch.randn(1, 3, 6, generator=g), torch.randn(1, 3, 6, generator=g)
    # F.kl_div(input=log p_θ, target=log p_ref, log_target=True) is the TOFU/open-unlearning retain KL
    ref_kl = F.kl_div(F.log_softmax(pol, -1).view(-1, 6), F.log_softmax(ref, -1).view(-1, 6),
                      reduction="batchmean", log_target=True)
    assert kl_on_retain(pol, ref, torch.ones(1, 3)).item() == pytest.approx(ref_kl.item(), rel=1e-5)


# ---------------------------------------------------------------- RMU


def test_rmu_hand_values():
    u = torch.tensor([0.6, 0.8])  # unit; c·u = (3, 4) with c = 5
    forget_acts = torch.tensor([[[3.0, 4.0], [0.0, 0.0], [100.0, 100.0]]])  # (1, 3, 2); last token masked
    mask_f = torch.tensor([[1, 1, 0]])
    retain_acts = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [5.0, 5.0]]])  # (2, 2, 2)
    retain_ref = torch.tensor([[[1.0, 0.0], [0.0, 4.0]], [[2.0, 0.0], [-7.0, 9.0]]])
    mask_r = torch.tensor([[1, 1], [1, 0]])
    forget, retain = rmu_loss(forget_acts, retain_acts, retain_ref, u, 5.0, 2.0, mask_f, mask_r)
    # forget: tokens (0 + 0)/2 = 0 and (9 + 16)/2 = 12.5, mean over 2 unmasked tokens = 6.25
    assert forget.tolist() == pytest.approx([6.25])
    # retain, α = 2: sample 0 tokens (0 + 4)/2 = 2, (9 + 0)/2 = 4.5 -> 3.25 -> 6.5; sample 1 (4 + 0)/2 = 2 -> 4
    assert retain.tolist() == pytest.approx([6.5, 4.0])


def test_rmu_matches_wmdp_mse_loss_with_full_masks():
    g = torch.Generator().manual_seed(3)
    h = 8
    u = torch.rand(h, generator=g)
    u = u / u.norm()
    forget_acts = torch.randn(1, 5, h, generator=g)
    retain_acts, retain_ref = torch.randn(1, 4, h, generator=g), torch.randn(1, 4, h, generator=g)
    forget, retain = rmu_loss(forget_acts, retain_acts, retain_ref, u, 6.5, 1200.0,
                              torch.ones(1, 5), torch.ones(1, 4))
    # centerforaisafety/wmdp rmu/unlearn.py: mse_loss(acts, c·u) and α·mse_loss(acts, frozen_acts)
    assert forget.item() == pytest.approx(F.mse_loss(forget_acts, 6.5 * u.view(1, 1, h).expand_as(forget_acts)).item(),
                                          rel=1e-5)
    assert retain.item() == pytest.approx(1200.0 * F.mse_loss(retain_acts, retain_ref).item(), rel=1e-5)


def test_rmu_forget_gradient_pulls_activations_toward_the_scaled_control_vector():
    u = torch.tensor([0.6, 0.8])
    acts = torch.zeros(1, 1, 2, requires_grad=True)
    forget, _ = rmu_loss(acts, torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), u, 5.0, 1.0,
                         torch.ones(1, 1), torch.ones(1, 1))
    forget.sum().backward()
    # d/dh (1/H)‖h − c·u‖² = (2/H)(h − c·u) = (0 − 3, 0 − 4) at H = 2
    assert acts.grad.flatten().tolist() == pytest.approx([-3.0, -4.0])
