"""FABE-style backdoor cleaning (Liu et al. ICML 2024, trained as Tuna, microsoft/LMOps): fine-tune a rewriter on
inputs that each come with N scored candidate rewrites,

    loss = mle_weight · MLE + rank_weight · ranking(s_1..s_N)

s_k: the mean log-probability of candidate k's response tokens (losses/ranking.py), candidates best first.
ranking: `listmle` (default; τ) or Tuna's `margin` (m), per sample then the batch mean.
MLE: the batch token-mean NLL of the best candidate (`mle_on: top`, default) or of every candidate (`all`,
Tuna's choice), over response tokens.

All N candidates of all rows of a batch go through ONE forward pass ((B·N, T), data/candidates.py), the prompt
repeated in each row; the NLL and the scores come from the same token log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import one_of, opt
from safealign.errors import ConfigError
from safealign.losses.ranking import length_normalized_logps, listmle_loss, margin_ranking_loss
from safealign.losses.sft import batch_token_mean, token_log_probs
from safealign.methods.base import Method, StepOutput


@dataclass
class FABEConfig:
    registry_name = "fabe"
    rank_loss: str = opt("listmle", "listmle (listwise, default) | margin (Tuna's pairwise margin loss)")
    mle_on: str = opt("top", "top: MLE on the best candidate | all: on every candidate (Tuna)")
    mle_weight: float = opt(1.0, "weight of the MLE term")
    rank_weight: float = opt(0.3, "weight of the ranking term; 0 trains MLE only")
    tau: float = opt(1.0, "ListMLE temperature τ")
    margin: float = opt(0.1, "margin m per rank gap (margin loss)")

    def validate(self, where: str) -> None:
        one_of(self.rank_loss, ("listmle", "margin"), f"{where}.rank_loss")
        one_of(self.mle_on, ("top", "all"), f"{where}.mle_on")
        if self.tau <= 0 or self.mle_weight < 0 or self.rank_weight < 0:
            raise ConfigError(f"{where}: tau must be > 0, mle_weight and rank_weight >= 0")


def candidate_scores(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward over the (B·N, T) batch: (s (B, N), token log-probs (B·N, T−1), response mask (B·N, T−1))."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    token_logps, mask = token_log_probs(logits, batch["labels"])
    b, n = batch["scores"].shape
    return length_normalized_logps(token_logps, mask).view(b, n), token_logps, mask


class FABE(Method):
    Config = FABEConfig
    streams = ("train",)
    data_kind, model_kind = "candidates", "causal_lm"

    def step(self, model, streams, step: int) -> StepOutput:
        batch = next(streams["train"])
        scores, token_logps, mask = candidate_scores(model, batch)
        b, n = scores.shape
        if self.cfg.mle_on == "top":  # rows b·N are each sample's best candidate
            token_logps, mask = token_logps.view(b, n, -1)[:, 0], mask.view(b, n, -1)[:, 0]
        mle = batch_token_mean(-(token_logps * mask).sum(dim=1), mask.sum(dim=1))
        rank = (listmle_loss(scores, self.cfg.tau) if self.cfg.rank_loss == "listmle"
                else margin_ranking_loss(scores, self.cfg.margin)).mean()
        loss = self.cfg.mle_weight * mle + self.cfg.rank_weight * rank
        ordered = (scores[:, :-1] > scores[:, 1:]).float().mean()  # adjacent gold pairs the model orders right
        return StepOutput(loss, {"mle": mle.item(), "rank": rank.item(), "pair_order_accuracy": ordered.item()})
