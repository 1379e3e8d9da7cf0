"""Preference-tuning losses: DPO and its IPO / hinge variants, MM-DPO's margin-adaptive β, and the pieces of
Safe-MM-DPO (a per-token KL to the reference and a Lagrange multiplier on the safety loss).

Papers: DPO, Rafailov et al. 2023, arXiv 2305.18290 (Eq. 7); IPO, Azar et al. 2023, arXiv 2310.12036 (Eq. 17);
cDPO label smoothing, Mitchell 2023 (https://ericmitchell.ai/cdpo.pdf); SLiC hinge, Zhao et al. 2023,
arXiv 2305.10425; MM-DPO, Zhang et al. 2025, arXiv 2502.10391 (dynamic reward scaling);
Safe RLHF / PPO-Lagrangian, Dai et al. 2023, arXiv 2310.12773 (the λ dual update); the k3 KL estimator,
Schulman 2020 (http://joschu.net/blog/kl-approx.html); ORPO, Hong et al. 2024, arXiv 2403.07691 (Eqs. 4, 6, 7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO-family loss on sequence log-probs.

    All log-prob inputs are (B,): per-sequence log-probs SUMMED over response tokens (DPO's log π(y|x)).
    beta: a float or a (B,) tensor (a per-sample β, as MM-DPO uses). With the log-ratio margin

        h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))

    sigmoid  (DPO Eq. 7 with cDPO smoothing ε):  −(1−ε)·log σ(βh) − ε·log σ(−βh)
             (what TRL's 'sigmoid' did before 1.0; TRL 1.x's 'sigmoid' has no smoothing, i.e. ε = 0)
    ipo      (IPO Eq. 17, β playing τ):          (h − 1/(2β))²
             TRL divides each log-ratio by its completion's token count before this; that normalisation is
             the caller's here (pass per-token-mean log-probs to reproduce TRL / the IPO authors).
    hinge    (SLiC):                             relu(1 − βh)

    Returns (losses, chosen_rewards, rejected_rewards), each (B,) and unreduced; the rewards are the implicit
    DPO rewards β·(log π − log π_ref), detached. label_smoothing is used by 'sigmoid' only.
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    h = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected one of {DPO_LOSS_TYPES}")
    return losses, (beta * chosen_logratios).detach(), (beta * rejected_logratios).detach()


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, stable on both sides of −ln 2 (Mächler 2012): log(−expm1(x)) near 0,
    log1p(−exp(x)) below."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_log_odds(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor) -> torch.Tensor:
    """log odds(y_w|x) − log odds(y_l|x), odds(y|x) = P/(1 − P) with P = exp(mean token log-prob) (ORPO Eq. 4:
    the length-normalised likelihood). Inputs (B,) per-token MEAN log-probs over response tokens; returns (B,)."""
    c, r = chosen_avg_logps.float(), rejected_avg_logps.float()
    return (c - r) - (log1mexp(c) - log1mexp(r))


def orpo_odds_ratio_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor) -> torch.Tensor:
    """ORPO's L_OR = −log σ(log odds ratio) per pair (Eq. 7), (B,), unreduced; the method adds β · its batch
    mean to the chosen response's NLL (Eq. 6, β playing λ)."""
    return -F.logsigmoid(orpo_log_odds(chosen_avg_logps, rejected_avg_logps))


def margin_adaptive_beta(
    margin: torch.Tensor, beta_ori: float, w: float, k: float, min_beta: float = 1e-3
) -> torch.Tensor:
    """MM-DPO's Dynamic Reward Scaling (arXiv 2502.10391, MM-RLHF): a per-pair β from a reward-model margin.

        β_i = max(β_ori · (1 + w · (1 − exp(−k · δ_i))), min_beta)

    margin δ: (B,), the score model's margin for the pair, r(y_w) − r(y_l) for a reward model or
    c(y_l) − c(y_w) for a cost model (positive when the model agrees with the label). δ = 0 gives β_ori and
    β → β_ori·(1 + w) as δ → ∞. A negative margin (the model disagrees with the label) gives β < β_ori, and
    since 1 − exp(−kδ) is unbounded below, the clamp at min_beta is what keeps β positive. No gradient flows
    into the margin (it comes from a frozen score model); the result is detached.
    """
    beta = beta_ori * (1 + w * (1 - torch.exp(-k * margin.detach().float())))
    return beta.clamp(min=min_beta)


def per_token_kl(policy_logps_tok: torch.Tensor, ref_logps_tok: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence mean over masked tokens of Schulman's k3 estimate of KL(π ‖ π_ref).

    policy_logps_tok, ref_logps_tok: (B, T) log-probs of the sampled tokens; mask: (B, T) bool or 0/1.
    With r_t = log π_ref(y_t) − log π(y_t):   kl_t = exp(r_t) − 1 − r_t   (≥ 0, zero iff r_t = 0; unbiased
    for KL(π ‖ π_ref) when the tokens are sampled from π). Returns (B,): Σ_t mask·kl_t / max(Σ_t mask, 1),
    a token mean per sequence (not a sum), so a sequence with no masked tokens gives 0. Computed in float32.
    """
    r = ref_logps_tok.float() - policy_logps_tok.float()  # (B, T)
    kl = torch.exp(r) - 1 - r
    mask = mask.float()
    return (kl * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def lagrange_update(lam: float, mean_cost: float, threshold: float, lr: float, lam_max: float) -> float:
    """One projected dual-ascent step on the Lagrange multiplier (Safe RLHF, arXiv 2310.12773, the λ update):

        λ ← clip(λ + lr · (J_c − d), 0, λ_max)

    mean_cost J_c: the batch mean cost (or safety loss) the constraint is on; threshold d: its budget.
    λ grows while the constraint is violated (J_c > d) and shrinks to exactly 0 while it holds. safe-rlhf's
    PPO-Lag code instead takes an SGD step on log λ (so λ ← λ·exp(lr·λ·(J_c − d)) to first order, never 0);
    this additive, clipped form can switch the safety term fully off.
    """
    return float(min(max(lam + lr * (mean_cost - threshold), 0.0), lam_max))


def safe_mm_dpo_total(
    loss_helpful: torch.Tensor, loss_safety: torch.Tensor, loss_kl: torch.Tensor, lam: float, kl_coeff: float
) -> torch.Tensor:
    """Safe-MM-DPO objective from batch-mean scalars:

        (L_helpful + λ · L_safety) / (1 + λ) + kl_coeff · L_kl

    The 1/(1 + λ) keeps the preference part on one scale as λ moves (as safe-rlhf's PPO-Lag normalises
    its combined advantage (A_r − λ·A_c)/(1 + λ)); the KL term is outside it so its weight does not depend on λ.
    """
    return (loss_helpful + lam * loss_safety) / (1 + lam) + kl_coeff * loss_kl
