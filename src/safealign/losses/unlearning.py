"""LLM-unlearning losses: gradient ascent, NPO, SimNPO, the KL-to-reference retain term and RMU's activation
losses. Pure tensor functions; the forward passes (policy, frozen reference, activation hooks) are the method's.

Papers and the code each normalisation follows:
  GA       Jang et al. 2022, arXiv 2210.01504; Yao et al. 2023, arXiv 2310.10683; the TOFU baseline
           (Maini et al. 2024, arXiv 2401.06121).
  NPO      Zhang, Lin, Bai, Mei 2024, arXiv 2404.05868 (the L_NPO,β loss); open-unlearning's `NPO`
           (locuslab/open-unlearning, src/trainer/unlearn/npo.py + utils.compute_dpo_loss).
  SimNPO   Fan et al. 2024, arXiv 2410.07163; open-unlearning's `SimNPO`, OPTML-Group/Unlearn-Simple.
  KL       TOFU's "KL minimisation" retain term (arXiv 2401.06121); open-unlearning utils.compute_kl_divergence.
  SOUL KL  the `KL` method of SOUL (Jia et al. 2024, arXiv 2404.18239), OPTML-Group/SOUL src/unlearn/KL.py `kl_loss`.
  RMU      Li et al. 2024, WMDP, arXiv 2403.03218 (§5, Representation Misdirection for Unlearning);
           centerforaisafety/wmdp rmu/unlearn.py and open-unlearning's `RMU`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SEQUENCE_NORMALIZATIONS = ("sum", "token_mean")

LN2 = math.log(2.0)


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor, normalization: str) -> torch.Tensor:
    """Per-sequence log-prob from per-token log-probs.

    token_logps: (B, T) log p(y_t | x, y_<t) (e.g. from `losses.sft.token_log_probs`); mask: (B, T) bool or 0/1,
    1 on the response tokens that count. Masked-out positions are ignored even if they hold inf or NaN.

    sum         Σ_t m_t · log p_t = log π(y|x). open-unlearning's NPO default (`compute_batch_nll` sums the
                per-token cross-entropy of each sequence) and what the NPO paper's log π(y|x) means.
    token_mean  Σ_t m_t · log p_t / max(Σ_t m_t, 1), the length-normalised log-prob (1/|y|)·log π(y|x) that
                SimNPO needs. SOUL (OPTML-Group/SOUL, src/unlearn/NPO.py) feeds NPO the HF `outputs.loss`,
                which is the token mean over the whole BATCH; that equals this per-sequence mean only at batch
                size 1 or equal lengths. A sequence with no masked tokens gives 0.

    Returns (B,) in token_logps' dtype.
    """
    mask = mask.bool()
    masked = torch.where(mask, token_logps, torch.zeros_like(token_logps))  # (B, T)
    total = masked.sum(dim=1)
    if normalization == "sum":
        return total
    if normalization == "token_mean":
        return total / mask.sum(dim=1).clamp(min=1).to(total.dtype)
    raise ValueError(f"unknown normalization {normalization!r}; expected one of {SEQUENCE_NORMALIZATIONS}")


def ga_loss(nll: torch.Tensor) -> torch.Tensor:
    """Gradient ascent on the forget set: the loss to MINIMISE is −NLL, so descent raises the NLL.

    nll: (B,) per-sample NLL in whatever normalisation the caller picked (−`sequence_logps(..., 'sum')` or
    `sequence_nll`'s nll_sum for the sequence sum; a token mean otherwise). Returns (B,) = −nll, unreduced.
    With nll = −log π(y|x) this is +log π(y|x): d loss / d log π = +1 for every sample, the unbounded,
    unweighted push that makes GA collapse. open-unlearning's GradAscent minimises −`model(...).loss`, the
    batch token mean; reproduce it with `losses.sft.batch_token_mean(-nll_sum, n_tokens)`.
    """
    return -nll


def npo_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float | torch.Tensor
) -> torch.Tensor:
    """Negative Preference Optimization on forget samples (arXiv 2404.05868):

        L = −(2/β) · log σ(−β · x),   x = log π_θ(y|x) − log π_ref(y|x)

    policy_logps, ref_logps: (B,) sequence log-probs in one normalisation (`sequence_logps`; 'sum' is the
    paper's and open-unlearning's). beta: float or (B,) tensor, > 0. Returns (B,), unreduced.

    Properties, all from log σ(z) = −ln 2 + z/2 − z²/8 + O(z⁴):
      * x = 0 (policy still equals the reference): L = (2/β)·ln 2 for every β.
      * dL/dx = 2·σ(βx) = 2·π_θ^β / (π_θ^β + π_ref^β) ∈ (0, 2); it is 1 at x = 0 and falls to 0 as the policy
        forgets (x → −∞), which is why NPO slows down where GA keeps accelerating.
      * small β:  L = (2/β)·ln 2 + x + (β/4)·x² + O(β³x⁴),  so as β → 0 the loss is the constant (2/β)·ln 2 plus
        log π_θ − log π_ref, and dL/d log π_θ = 2σ(βx) → 1, exactly GA's gradient on its loss −NLL = log π_θ
        (`ga_loss`). The reference only enters through the weight 2σ(βx).
    Computed with F.logsigmoid (stable for large |βx|). No gradient is meant to reach ref_logps (compute them
    under no_grad); it is not detached here.
    """
    log_ratio = policy_logps - ref_logps  # (B,)
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio)


def simnpo_loss(
    policy_logps_token_mean: torch.Tensor, beta: float | torch.Tensor, gamma: float = 0.0
) -> torch.Tensor:
    """SimNPO on forget samples (arXiv 2410.07163): NPO without the reference and with SimPO's length
    normalisation and reward margin γ:

        L = −(2/β) · log σ(−β · ℓ − γ),   ℓ = (1/|y|) · log π_θ(y|x)

    policy_logps_token_mean: (B,) per-token MEAN log-probs ℓ (`sequence_logps(..., 'token_mean')`). beta > 0.
    Returns (B,), unreduced. dL/dℓ = 2·σ(βℓ + γ) ∈ (0, 2): gradient ascent on ℓ, down-weighted once a
    sample is forgotten. At βℓ + γ = 0 the loss is (2/β)·ln 2.

    γ follows the paper's formula (γ outside β). The code of both OPTML-Group/Unlearn-Simple (its TOFU
    trainer's `gamma`) and open-unlearning (`delta`) computes −(2/β)·log σ(β·(−ℓ − δ)), i.e. its δ = γ/β here;
    convert when copying a γ from their configs. γ = 0 (the default) is the same in both.
    """
    return -(2.0 / beta) * F.logsigmoid(-beta * policy_logps_token_mean - gamma)


def kl_on_retain(policy_logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample token mean of the forward KL from the frozen reference to the policy, on retain data:

        kl_t = KL(p_ref,t ‖ p_θ,t) = Σ_v p_ref(v) · (log p_ref(v) − log p_θ(v))
        out_b = Σ_t m_bt · kl_bt / max(Σ_t m_bt, 1)

    policy_logits, ref_logits: (B, T, V) raw logits (softmax taken here, over V); mask: (B, T) bool or 0/1
    selecting the positions whose next-token distributions count (mask[b, t] refers to logits[b, t]; pass
    e.g. the attention mask, or `labels[:, 1:] != IGNORE_INDEX` with logits[:, :-1] for response tokens only).
    Masked positions contribute nothing (even NaN logits there). Returns (B,) float32, ≥ 0, 0 where the two
    distributions agree at every unmasked position and for a sample with no unmasked tokens.

    This is the direction TOFU's and open-unlearning's code use: `kl_div(log p_θ, log p_ref, log_target=True)`
    = Σ p_ref (log p_ref − log p_θ). Their reduction differs: 'batchmean' over the flattened (B·T, V) tensor is
    a mean over ALL B·T positions, padding and prompt included; here padding is masked and the mean is per
    sample (batch_mean of this equals theirs only when every mask is all ones).
    """
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)  # (B, T, V)
    pol_logp = F.log_softmax(policy_logits.float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - pol_logp)).sum(dim=-1)  # (B, T)
    mask = mask.bool()
    kl = torch.where(mask, kl, torch.zeros_like(kl))
    return kl.sum(dim=1) / mask.sum(dim=1).clamp(min=1).float()


REFERENCE_DIVERGENCES = ("cross_entropy", "kl")


def reference_divergence(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor, divergence: str = "cross_entropy"
) -> torch.Tensor:
    """Per-sample token mean of a divergence of the policy's next-token distributions from the frozen reference's,
    SOUL's `KL` method term (OPTML-Group/SOUL, src/unlearn/KL.py), p_θ = softmax(policy_logits), p_ref likewise:

        cross_entropy  d_t = H(p_θ,t, p_ref,t) = −Σ_v p_θ,t(v) · log p_ref,t(v)        (SOUL's code)
        kl             d_t = KL(p_θ,t ‖ p_ref,t) = Σ_v p_θ,t(v) · (log p_θ,t(v) − log p_ref,t(v))
        out_b = Σ_t m_bt · d_bt / max(Σ_t m_bt, 1)

    SOUL's `kl_loss(p, q) = −(p · log(q + 1e-12)).sum(-1).mean()` is called with p = the policy's softmax and q =
    the reference's: despite its name it is the cross-entropy H(p_θ, p_ref) = KL(p_θ ‖ p_ref) + H(p_θ), which is
    NOT 0 at p_θ = p_ref (it equals the policy's entropy there) and is minimised by a one-hot p_θ on the
    reference's argmax. `kl` drops the entropy: the divergence the method's name promises, in the same direction
    (policy first), 0 exactly where the two agree. log p_ref is the exact log_softmax (SOUL: log(q + 1e-12),
    which differs only where p_ref(v) < ~1e-10).

    policy_logits, ref_logits: (B, T, V) raw logits at the SAME positions (no shift: SOUL takes every position,
    prompt included); mask: (B, T) bool or 0/1, the positions that count (pass the attention mask). SOUL averages
    over all B·T positions, padding included; here padding is masked and the mean is per sample, so the batch
    mean of this equals SOUL's only when no row is padded. Masked positions contribute nothing (even NaN logits).
    Returns (B,) float32 (≥ 0 for both divergences).
    """
    if divergence not in REFERENCE_DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {REFERENCE_DIVERGENCES}")
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)  # (B, T, V)
    pol_logp = F.log_softmax(policy_logits.float(), dim=-1)
    pol_p = pol_logp.exp()
    if divergence == "kl":
        d = (pol_p * (pol_logp - ref_logp)).sum(dim=-1)  # (B, T)
    else:
        d = -(pol_p * ref_logp).sum(dim=-1)  # (B, T)
    mask = mask.bool()
    d = torch.where(mask, d, torch.zeros_like(d))
    return d.sum(dim=1) / mask.sum(dim=1).clamp(min=1).float()


def _token_mean_mse(acts: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_t m_t · (1/H)·‖acts_t − target_t‖² / max(Σ_t m_t, 1): (B, T, H) and (B, T) -> (B,), float32."""
    sq = ((acts.float() - target.float()) ** 2).mean(dim=-1)  # (B, T): mean over the hidden dim
    mask = mask.bool()
    sq = torch.where(mask, sq, torch.zeros_like(sq))
    return sq.sum(dim=1) / mask.sum(dim=1).clamp(min=1).float()


def rmu_loss(
    forget_acts: torch.Tensor,
    retain_acts: torch.Tensor,
    retain_ref_acts: torch.Tensor,
    control_vec: torch.Tensor,
    steering_coeff: float,
    alpha: float,
    mask_f: torch.Tensor,
    mask_r: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMU's two activation losses (WMDP, arXiv 2403.03218, §5) at one hooked layer ℓ:

        forget_b = Σ_t m^f_bt · (1/H)·‖h^f_bt − c·u‖²            / max(Σ_t m^f_bt, 1)
        retain_b = α · Σ_t m^r_bt · (1/H)·‖h^r_bt − h^r,ref_bt‖² / max(Σ_t m^r_bt, 1)

    forget_acts: (B, T, H) the updated model's layer-ℓ activations on forget text; retain_acts, retain_ref_acts:
    (B', T', H) the updated and the frozen model's activations on retain text (ref without grad);
    control_vec: (H,) the fixed UNIT vector u (not renormalised here; the WMDP code draws it once per run as
    torch.rand(H) / ‖·‖, uniform on [0, 1) so all entries are positive, not Gaussian); steering_coeff: c
    (the WMDP Zephyr-7B run, run_rmu_zephyr.ipynb: 6.5; rmu/unlearn.py's and open-unlearning's default: 20);
    alpha: the retain weight α (Zephyr-7B run: 1200; rmu/unlearn.py default: 100).
    mask_f, mask_r: (B, T), (B', T') bool or 0/1, the token positions that count.

    Normalisation: a mean over the hidden dim H and over unmasked tokens, per sample: exactly
    `F.mse_loss(acts, target)` (the WMDP code, mean over B·T·H) per sample when every mask is all ones, and the
    per-sample value of open-unlearning's `compute_activation_loss` (which then takes the batch mean). The WMDP
    code does not mask padding; masked positions here contribute nothing. α multiplies the retain term here;
    the forget term carries no weight. Returns (forget (B,), retain (B',)), float32, unreduced.
    """
    target = (steering_coeff * control_vec).to(forget_acts.device).expand_as(forget_acts)  # (B, T, H)
    forget = _token_mean_mse(forget_acts, target, mask_f)
    retain = alpha * _token_mean_mse(retain_acts, retain_ref_acts.detach(), mask_r)
    return forget, retain
