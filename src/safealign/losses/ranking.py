"""Ranking losses over scored candidates (FABE / Tuna): each sample has N candidate responses ordered best first
by their gold scores, and s_k, the model's length-normalised log-likelihood of candidate k.

Papers and code: FABE, Liu et al. ICML 2024 (front-door adjustment for backdoor elimination), trained as Tuna
(Li et al. 2023, arXiv 2310.13385; microsoft/LMOps tuna); ListMLE, Xia et al. 2008 (ICML, "Listwise approach to
learning to rank").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def length_normalized_logps(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """s = Σ_t mask·log p / Σ_t mask per sequence: the mean log-probability of the response tokens only.

    token_logps, mask: (R, T) from `token_log_probs` (0 / False on prompt and padding positions, so neither
    counts in the numerator or the length). Returns (R,). A row without response tokens gives 0.
    """
    mask = mask.float()
    return (token_logps * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def listmle_loss(scores: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """ListMLE, the negative log-likelihood of the gold order under a Plackett-Luce model, per sample:

        −Σ_{k=1}^{N} [ s_π(k)/τ − log Σ_{j≥k} exp(s_π(j)/τ) ]

    scores: (B, N), column k the model's score of the k-th best candidate (π already applied: best first).
    The k = N term is 0, so the sum over k < N is the same. With N = 2 it is −log σ((s_1 − s_2)/τ), the logistic
    loss of the score difference. Returns (B,), unreduced.
    """
    z = scores.float() / tau  # (B, N)
    # log Σ_{j≥k} exp(z_j): a reversed cumulative logsumexp
    tail = torch.logcumsumexp(z.flip(dims=[1]), dim=1).flip(dims=[1])  # (B, N)
    return -(z - tail).sum(dim=1)


def margin_ranking_loss(scores: torch.Tensor, margin: float = 0.1) -> torch.Tensor:
    """Tuna's pairwise margin loss, per sample:

        Σ_{i=1}^{N−1} mean_{k=1}^{N−i} max(0, s_{k+i} − s_k + i·m)

    scores: (B, N), best first. A candidate i places below another must score at least i·m lower, or pays the
    shortfall; each gap i is averaged over its N−i pairs and the gaps are summed. Returns (B,), unreduced.
    """
    n = scores.shape[1]
    total = torch.zeros(scores.shape[0], device=scores.device)
    for i in range(1, n):
        total = total + F.relu(scores[:, i:] - scores[:, :-i] + i * margin).float().mean(dim=1)
    return total


def kendall_tau(model_scores: list[float], gold_scores: list[float]) -> float:
    """Kendall's τ-a between two score lists over the same items: (concordant − discordant) / (N(N−1)/2);
    pairs tied in either list count as neither. 1 when the orders agree, −1 when reversed."""
    n = len(model_scores)
    pairs = n * (n - 1) / 2
    if pairs == 0:
        return 0.0
    agree = 0
    for a in range(n):
        for b in range(a + 1, n):
            product = (model_scores[a] - model_scores[b]) * (gold_scores[a] - gold_scores[b])
            agree += (product > 0) - (product < 0)
    return agree / pairs
