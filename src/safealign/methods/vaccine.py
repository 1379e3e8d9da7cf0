"""Vaccine: perturbation-aware alignment (Huang et al. 2024, arXiv 2402.01109; code git-disl/Vaccine
`VaccineTrainer`). An alignment-stage defense: each step trains on the alignment batch with every attention
output shifted by ε_l = ρ · g_l / (‖g‖ + 1e-7), g_l the gradient of the batch's loss with respect to that output
in a first, clean pass (methods/perturbation.py). The update is the gradient of the perturbed pass only.
Loss: the batch token-mean NLL (as SFT) in both passes. ρ 2 as the authors' scripts (script/alignment/Vaccine.sh).
"""

from __future__ import annotations

from dataclasses import dataclass

from safealign.config import opt
from safealign.errors import ConfigError
from safealign.methods.base import Method, StepOutput, causal_lm_loss
from safealign.methods.perturbation import attention_modules, perturbed_loss


@dataclass
class VaccineConfig:
    registry_name = "vaccine"
    rho: float = opt(2.0, "perturbation norm ρ over all attention outputs together")

    def validate(self, where: str) -> None:
        if self.rho < 0:
            raise ConfigError(f"{where}.rho: must be >= 0")


class Vaccine(Method):
    Config = VaccineConfig
    streams = ("train",)
    data_kind, model_kind = "examples", "causal_lm"

    def step(self, model, streams, step: int) -> StepOutput:
        loss, metrics = perturbed_loss(model, next(streams["train"]), attention_modules(model), self.cfg.rho, causal_lm_loss)
        return StepOutput(loss, {"nll": metrics["clean_loss"], "perturbed_nll": loss.item(),
                                 "activation_grad_norm": metrics["activation_grad_norm"]})
