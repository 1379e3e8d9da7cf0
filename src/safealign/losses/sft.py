"""Next-token negative log-likelihood."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the label of positions the loss skips (prompt and padding), as HF and PyTorch


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed NLL of the labelled tokens and their count.

    logits: (B, T, V) for inputs x_1..x_T; labels: (B, T) with IGNORE_INDEX (-100) on prompt and padding.
    Token t+1 is predicted from position t (the usual causal shift). Computed in float32.
    Returns (nll_sum (B,), n_tokens (B,)): nll_sum_b = -Σ_t log p(y_{b,t+1} | x_{b,≤t}) over labelled t.
    Reductions are the caller's: the batch token mean Σ_b nll_sum_b / Σ_b n_tokens_b is what HF Trainer
    (and so the Lisa code) optimises; the per-sample mean is nll_sum / n_tokens.
    """
    logps, mask = token_log_probs(logits, labels)
    return -(logps * mask).sum(dim=1), mask.sum(dim=1)


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y_{t+1} | x_{≤t}) per labelled token: (logps (B, T-1) float32, 0 where unlabelled; mask (B, T-1) bool).
    The one place log-probs are gathered (SFT NLL, DPO sequence log-probs, per-token KL)."""
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1, :].float().transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX,
                          reduction="none")  # (B, T-1); 0 on ignored positions
    return -nll, shift_labels != IGNORE_INDEX


def batch_token_mean(nll_sum: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Σ nll / Σ tokens over the batch: every labelled token weighs the same (HF Trainer's causal-LM loss)."""
    return nll_sum.sum() / n_tokens.sum().clamp(min=1)
