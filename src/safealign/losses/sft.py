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


SLICE_ELEMENTS = 2**20  # the smallest slice token_log_probs works on: 4 MB of float32, few slices on small models


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor, slices: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y_{t+1} | x_{≤t}) per labelled token: (logps (B, T-1) float32, 0 where unlabelled; mask (B, T-1) bool).
    The one place log-probs are gathered (SFT NLL, DPO sequence log-probs, per-token KL).

    No float32 copy of the whole (B, T, V) logits is made: at a 152k vocabulary that copy, and the log-softmax that
    autograd would keep for backward, are gigabytes per micro-batch. Forward and backward both run over slices of
    the sequence (_ChunkedLogProbs), about `slices` of them and none under SLICE_ELEMENTS, so beyond the logits'
    own gradient only one slice's float32 work (1/64 of the logits by default) exists at a time. Each position is
    the same computation as F.cross_entropy on the whole tensor.
    """
    shift_labels = labels[:, 1:]
    per_position = max(1, logits.shape[0] * logits.shape[-1])
    width = max(1, max(SLICE_ELEMENTS, logits.numel() // max(1, slices)) // per_position)
    if torch.is_grad_enabled() and logits.requires_grad:
        logps = _ChunkedLogProbs.apply(logits, shift_labels, width)
    else:
        logps = _chunked_log_probs(logits, shift_labels, width)
    return logps, shift_labels != IGNORE_INDEX


def _slices(shift_labels: torch.Tensor, width: int):
    """(start, end, labels of positions start..end-1) over the sequence, `width` positions at a time."""
    for start in range(0, shift_labels.shape[1], width):
        labels = shift_labels[:, start:start + width]
        yield start, start + labels.shape[1], labels


def _chunked_log_probs(logits: torch.Tensor, shift_labels: torch.Tensor, width: int) -> torch.Tensor:
    pieces = [-F.cross_entropy(logits[:, start:end].float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                               reduction="none")  # 0 on ignored positions
              for start, end, labels in _slices(shift_labels, width)]
    return torch.cat(pieces, dim=1) if pieces else logits.new_zeros(shift_labels.shape, dtype=torch.float32)


class _ChunkedLogProbs(torch.autograd.Function):
    """log p(label) per position with a hand-written backward, d log p_y / d z = onehot(y) − softmax(z), slice by
    slice into one preallocated gradient. (Checkpointing each slice is not enough: autograd's slice backward
    allocates a logits-sized zero tensor per slice.)"""

    @staticmethod
    def forward(ctx, logits, shift_labels, width):
        ctx.save_for_backward(logits, shift_labels)  # the tensors themselves, no copies
        ctx.width = width
        return _chunked_log_probs(logits, shift_labels, width)

    @staticmethod
    def backward(ctx, grad_logps):
        logits, shift_labels = ctx.saved_tensors
        grad = torch.zeros_like(logits)  # the last position predicts nothing: its gradient stays 0
        for start, end, labels in _slices(shift_labels, ctx.width):
            labelled = labels != IGNORE_INDEX
            piece = -torch.softmax(logits[:, start:end].float(), dim=-1)
            piece.scatter_add_(-1, labels.clamp(min=0).unsqueeze(-1), labelled.unsqueeze(-1).to(piece.dtype))
            piece *= (grad_logps[:, start:end] * labelled).unsqueeze(-1)
            grad[:, start:end] = piece
        return grad, None, None


def batch_token_mean(nll_sum: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Σ nll / Σ tokens over the batch: every labelled token weighs the same (HF Trainer's causal-LM loss)."""
    return nll_sum.sum() / n_tokens.sum().clamp(min=1)
