"""ORPO (Hong et al. 2024, arXiv 2403.07691; code xfactlab/orpo, TRL's ORPOTrainer): preference-aligned SFT
without a reference model,

    loss = NLL(y_w | x) + β · mean_pairs[ −log σ(log odds(y_w|x) − log odds(y_l|x)) ]

NLL: the batch token-mean over the CHOSEN responses' tokens only, prompt masked (TRL computes it over prompt and
response tokens: a known difference; the paper's Eq. 6 is the response's NLL). The odds use each response's
per-token mean log-prob (losses/preference.py). β (the paper's λ) defaults to 0.2 as issue #6's setting (TRL 0.1).
Batches are `collate_pairs` output (chosen rows first); one forward over 2B rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import opt
from safealign.errors import ConfigError
from safealign.losses.preference import orpo_log_odds, orpo_odds_ratio_loss
from safealign.losses.sft import batch_token_mean, token_log_probs
from safealign.methods.base import Method, StepOutput


@dataclass
class ORPOConfig:
    registry_name = "orpo"
    beta: float = opt(0.2, "β (the paper's λ): weight of the odds-ratio term")

    def validate(self, where: str) -> None:
        if self.beta < 0:
            raise ConfigError(f"{where}.beta: must be >= 0, got {self.beta}")


def orpo_terms(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen NLL token-mean (), odds-ratio losses (B,), log odds ratios (B,)) from one forward."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    token_logps, mask = token_log_probs(logits, batch["labels"])  # (2B, T−1)
    mask = mask.float()
    summed, counts = (token_logps * mask).sum(dim=1), mask.sum(dim=1)
    half = summed.shape[0] // 2
    nll = batch_token_mean(-summed[:half], counts[:half])
    average = summed / counts.clamp(min=1)  # (2B,) per-token mean log-probs
    return nll, orpo_odds_ratio_loss(average[:half], average[half:]), orpo_log_odds(average[:half], average[half:])


class ORPO(Method):
    Config = ORPOConfig
    streams = ("train",)
    data_kind, model_kind = "pairs", "causal_lm"

    def step(self, model, streams, step: int) -> StepOutput:
        nll, odds_ratio, log_odds = orpo_terms(model, next(streams["train"]))
        loss = nll + self.cfg.beta * odds_ratio.mean()
        return StepOutput(loss, {"nll": nll.item(), "odds_ratio_loss": odds_ratio.mean().item(),
                                 "log_odds_ratio": log_odds.mean().item(),
                                 "pair_accuracy": (log_odds > 0).float().mean().item()})
