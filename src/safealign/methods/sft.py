"""Supervised fine-tuning: the batch token-mean NLL of response tokens."""

from __future__ import annotations

from dataclasses import dataclass

from safealign.methods.base import StepOutput, causal_lm_loss


@dataclass
class SFTConfig:
    registry_name = "sft"


class SFT:
    Config = SFTConfig
    streams = ("train",)

    def __init__(self, cfg: SFTConfig, total_steps: int):
        self.cfg = cfg

    def setup(self, model, streams) -> None:
        pass

    def step(self, model, streams, step: int) -> StepOutput:
        loss, _ = causal_lm_loss(model, next(streams["train"]))
        return StepOutput(loss, {"nll": loss.item()})

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
