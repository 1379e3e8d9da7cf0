"""Lisa: Lazy Safety Alignment (Huang et al. 2024, arXiv 2405.18641, Algorithm 2; code git-disl/Lisa `LisaTrainer`).

Two states share one optimizer. The alignment state trains on guide (safe) data for `alignment_step` optimizer
steps, the finetune state on the user's data for `finetune_step` steps, alternating, starting in alignment.
At each switch the current trainable weights become the anchor of the state that just ended, and the squared
distance between the two anchors is logged ("drift to consensus"). Each state's loss adds the proximal term
rho/2 · ||θ − anchor of the other state||², but only once step > proximal_warmup · total_steps (the authors'
code skips the first 10% of steps: the term slows early convergence). BSO is Lisa with rho = 0.

Difference from the authors' code, stated in docs/methods.md: there an alignment step replaces the user batch
the HF dataloader had already drawn (that batch is lost); here the user stream simply does not advance during
alignment steps. Total steps are the same (epochs of the user data), so user rows seen are the same count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import opt
from safealign.errors import ConfigError
from safealign.losses.regularizers import proximal, squared_distance
from safealign.methods.base import Method, MethodContext, StepOutput, causal_lm_loss, trainable_parameters

ALIGNMENT, FINETUNE = "alignment", "finetune"


@dataclass
class LisaConfig:
    registry_name = "lisa"
    rho: float = opt(1.0, "proximal strength; 0 gives BSO (plain bi-state optimisation)")
    alignment_step: int = opt(100, "optimizer steps in each alignment state")
    finetune_step: int = opt(900, "optimizer steps in each finetune state")
    proximal_warmup: float = opt(0.1, "share of total steps before the proximal term is applied")

    def validate(self, where: str) -> None:
        if self.rho < 0 or self.alignment_step < 0 or self.finetune_step < 0:
            raise ConfigError(f"{where}: rho, alignment_step and finetune_step must be >= 0")


class Lisa(Method):
    Config = LisaConfig
    streams = ("train",)  # and 'guide' when data.guide is set: without it Lisa stays in the finetune state
    data_kind, model_kind = "examples", "causal_lm"

    def __init__(self, cfg: LisaConfig, total_steps: int):
        self.cfg = cfg
        self.total_steps = total_steps
        self.status = ALIGNMENT
        self.clock = 0  # optimizer steps taken in the current state
        self.last_step = -1
        self.anchors: dict[str, dict[str, torch.Tensor]] = {}

    def setup(self, model, streams, ctx: MethodContext) -> None:
        """Both anchors start at the initial trainable weights (the authors' `init`). Without guide data
        Lisa never leaves the finetune state (the authors' guide_data_num = 0 case)."""
        self.has_guide = "guide" in streams
        self.status = ALIGNMENT if self.cfg.alignment_step and self.has_guide else FINETUNE
        start = self._snapshot(model)
        self.anchors = {ALIGNMENT: start, FINETUNE: {k: v.clone() for k, v in start.items()}}

    @staticmethod
    def _snapshot(model) -> dict[str, torch.Tensor]:
        return {k: p.detach().clone() for k, p in trainable_parameters(model).items()}

    def _advance(self, model, step: int) -> list[str]:
        """Called once at the start of each optimizer step: switch state when the current one is over."""
        events = []
        if step > 0:
            length = self.cfg.alignment_step if self.status == ALIGNMENT else self.cfg.finetune_step
            other_length = self.cfg.finetune_step if self.status == ALIGNMENT else self.cfg.alignment_step
            can_switch = other_length > 0 and self.has_guide
            if self.clock >= length and can_switch:
                ended = self.status
                self.anchors[ended] = self._snapshot(model)
                self.status = FINETUNE if ended == ALIGNMENT else ALIGNMENT
                self.clock = 0
                drift = squared_distance(self.anchors[ALIGNMENT], self.anchors[FINETUNE])
                events.append(f"lisa: step {step}: {ended} -> {self.status}, drift to consensus {drift:.6g}")
        self.clock += 1
        self.last_step = step
        return events

    def step(self, model, streams, step: int) -> StepOutput:
        events = self._advance(model, step) if step != self.last_step else []
        batch = next(streams["guide" if self.status == ALIGNMENT else "train"])
        nll = causal_lm_loss(model, batch)
        loss = nll
        prox = torch.zeros(())
        if self.cfg.rho > 0 and step > self.cfg.proximal_warmup * self.total_steps:
            other = FINETUNE if self.status == ALIGNMENT else ALIGNMENT
            prox = proximal(trainable_parameters(model), self.anchors[other], self.cfg.rho)
            loss = nll + prox
        metrics = {"nll": nll.item(), "proximal": float(prox.detach()), "alignment_state": float(self.status == ALIGNMENT)}
        return StepOutput(loss, metrics, events)

    def state_dict(self) -> dict:
        return {"status": self.status, "clock": self.clock, "last_step": self.last_step,
                "anchors": {k: {n: t.cpu() for n, t in v.items()} for k, v in self.anchors.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.status, self.clock, self.last_step = state["status"], state["clock"], state["last_step"]
        device = next(iter(next(iter(self.anchors.values())).values())).device if self.anchors else "cpu"
        self.anchors = {k: {n: t.to(device) for n, t in v.items()} for k, v in state["anchors"].items()}
