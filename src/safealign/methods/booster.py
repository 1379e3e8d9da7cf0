"""Booster: attenuating harmful perturbation (Huang et al. 2024, arXiv 2409.01586; code git-disl/Booster
`BoosterAlignmentTrainer`). An alignment-stage defense whose update is

    g = ∇f(w) + λ · [∇h(w) − ∇h(w − α · ∇h(w) / (‖∇h(w)‖ + 1e-7))]

f: the alignment loss on the alignment batch; h: the loss on a harmful batch (the same batch at both points);
‖·‖: one L2 norm over every trainable parameter. The second bracket term is h's gradient after a simulated
normalised harmful step: Booster penalises how much one harmful step would lower the harmful loss.

Three passes per step, as the code: ∇h(w) and ∇h(w') by torch.autograd.grad (the weights moved to w' in place
and copied back exactly), then f(w). The returned loss is f + λ·Σ_p ⟨d_p, p − p.detach()⟩ with
d = ∇h(w) − ∇h(w'): its value is f (what is logged) and its gradient is g. All losses: batch token-mean NLL.
Defaults λ 5, α 0.1 (script/alignment/smooth_align.sh).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import opt
from safealign.errors import ConfigError
from safealign.methods.base import Method, StepOutput, causal_lm_loss, trainable_parameters
from safealign.methods.perturbation import NORM_EPS, joint_norm
from safealign.models import unwrap


@dataclass
class BoosterConfig:
    registry_name = "booster"
    lamb: float = opt(5.0, "λ: weight of the harmful-perturbation attenuation term")
    alpha: float = opt(0.1, "α: length of the simulated (normalised) harmful step")

    def validate(self, where: str) -> None:
        if self.lamb < 0 or self.alpha < 0:
            raise ConfigError(f"{where}: lamb and alpha must be >= 0")


def booster_direction(params: list[torch.Tensor], harmful_loss, alpha: float) -> tuple[list[torch.Tensor], float, float]:
    """d = ∇h(w) − ∇h(w − α·∇h(w)/(‖∇h(w)‖ + 1e-7)) for `harmful_loss()` (a closure over the harmful batch);
    the weights are back at w on return. Also returns h(w) and h(w')."""
    h = harmful_loss()
    grad = torch.autograd.grad(h, params)
    step = alpha / (joint_norm(grad) + NORM_EPS)
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, g in zip(params, grad):
            p.sub_(step * g)
    try:
        h_moved = harmful_loss()
        grad_moved = torch.autograd.grad(h_moved, params)
    finally:
        with torch.no_grad():
            for p, w in zip(params, saved):
                p.copy_(w)
    return [g - gm for g, gm in zip(grad, grad_moved)], h.item(), h_moved.item()


class Booster(Method):
    Config = BoosterConfig
    streams = ("train", "harmful")
    data_kind, model_kind = "examples", "causal_lm"

    def step(self, model, streams, step: int) -> StepOutput:
        inner = unwrap(model)  # the extra passes bypass DDP; the final one goes through it
        params = list(trainable_parameters(inner).values())
        harmful = next(streams["harmful"])
        direction, h, h_moved = booster_direction(params, lambda: causal_lm_loss(inner, harmful), self.cfg.alpha)
        f = causal_lm_loss(model, next(streams["train"]))
        attenuation = sum((d * (p - p.detach())).sum() for d, p in zip(direction, params))  # value 0, gradient d
        return StepOutput(f + self.cfg.lamb * attenuation, {"nll": f.item(), "harmful_nll": h,
                                                            "harmful_nll_after_step": h_moved, "harmful_drop": h - h_moved})
