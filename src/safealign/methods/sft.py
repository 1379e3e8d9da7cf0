"""Supervised fine-tuning: the batch token-mean NLL of response tokens."""

from __future__ import annotations

from dataclasses import dataclass

from safealign.methods.base import Method, StepOutput, causal_lm_loss


@dataclass
class SFTConfig:
    registry_name = "sft"


class SFT(Method):
    Config = SFTConfig
    streams = ("train",)
    data_kind, model_kind = "examples", "causal_lm"

    def step(self, model, streams, step: int) -> StepOutput:
        loss = causal_lm_loss(model, next(streams["train"]))
        return StepOutput(loss, {"nll": loss.item()})
