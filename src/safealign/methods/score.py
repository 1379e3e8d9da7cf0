"""Score-model training on preference pairs (Safe RLHF, Dai et al. 2023, arXiv 2310.12773; PKU-Alignment/safe-rlhf):
the reward model on helpful pairs, the cost model on harmless pairs. The model is a `ScoreModel`; each batch is
`collate_pairs` output, chosen rows first. Losses in losses/reward.py; both are the batch mean over pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import opt
from safealign.losses.reward import cost_pair_loss, pair_accuracy, reward_pair_loss, sign_accuracy
from safealign.methods.base import Method, StepOutput


@dataclass
class RewardModelConfig:
    registry_name = "reward_model"
    reg: float = opt(0.001, "weight of the mean squared score (safe-rlhf's scripts use 0.001)")


@dataclass
class CostModelConfig:
    registry_name = "cost_model"
    reg: float = opt(0.001, "weight of the mean squared cost (safe-rlhf's scripts use 0.001)")


def _pair_scores(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    scores = model(batch["input_ids"], batch["attention_mask"])  # (2B,)
    half = scores.shape[0] // 2
    return scores[:half], scores[half:]


class RewardModel(Method):
    """Helpful pairs: chosen = the better response. Bradley-Terry loss."""

    Config = RewardModelConfig
    streams = ("train",)
    data_kind, model_kind = "pairs", "score"

    def step(self, model, streams, step: int) -> StepOutput:
        better, worse = _pair_scores(model, next(streams["train"]))
        loss = reward_pair_loss(better, worse, self.cfg.reg).mean()
        return StepOutput(loss, {"accuracy": pair_accuracy(better, worse),
                                 "reward_chosen": better.mean().item(), "reward_rejected": worse.mean().item()})


class CostModel(Method):
    """Harmless pairs: chosen = the safer response, so the rejected one should cost more; plus the sign terms."""

    Config = CostModelConfig
    streams = ("train",)
    data_kind, model_kind = "pairs", "score"
    pair_labels = ("chosen_is_safe", "rejected_is_safe")  # the sign terms need each response's own safety label

    def step(self, model, streams, step: int) -> StepOutput:
        batch = next(streams["train"])
        safer, unsafer = _pair_scores(model, batch)
        loss = cost_pair_loss(safer, unsafer, batch["chosen_is_safe"], batch["rejected_is_safe"], self.cfg.reg).mean()
        costs = torch.cat([safer, unsafer])
        is_safe = torch.cat([batch["chosen_is_safe"], batch["rejected_is_safe"]])
        return StepOutput(loss, {"accuracy": pair_accuracy(unsafer, safer), "sign_accuracy": sign_accuracy(costs, is_safe),
                                 "cost_safer": safer.mean().item(), "cost_unsafer": unsafer.mean().item()})
