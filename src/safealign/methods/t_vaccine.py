"""T-Vaccine: targeted layer-wise Vaccine (Liu et al. 2024, arXiv 2410.09760; code Lslland/T-Vaccine,
`BaseTrainer` with `--optimizer mesfa`). An alignment-stage defense:

- every `probability_steps` optimizer steps (step 0 included), one harmful example's loss is back-propagated to
  each attention output; layer l's importance is p_l = ‖g_l‖₂ / Σ_j ‖g_j‖₂ (plain norms, as the code);
- every `lisa_interval_steps` steps, `activated_layers` layers are drawn from p without replacement; the
  trainable parameters of the other layers' attention modules are frozen (requires_grad off, so the optimizer
  leaves them exactly as they are); MLP adapters stay trainable in the drawn layers and above;
- `below_active: freeze` (default) also freezes every layer below the lowest un-checkpointed one, MLP adapters
  included, for the interval. That is what the authors' code does in effect: its patched model runs unsampled
  layers under reentrant `torch.utils.checkpoint` (torch 2.1's default) with input gradients off, so nothing
  below the lowest layer that runs outside checkpointing gets a gradient; with more than 26 layers the layer
  below each drawn layer also runs outside it. `below_active: train` trains those MLP adapters too;
- each step is Vaccine's two passes with the perturbation on the drawn layers only (the joint norm is over them).

Hooks replace the authors' patched modeling file. Freezing parameters between steps is not compatible with DDP's
gradient buckets, so T-Vaccine runs in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import one_of, opt
from safealign.errors import ConfigError
from safealign.methods.base import Method, MethodContext, StepOutput, causal_lm_loss
from safealign.methods.perturbation import attention_modules, captured_outputs, perturbed_loss
from safealign.models import unwrap


@dataclass
class TVaccineConfig:
    registry_name = "t_vaccine"
    rho: float = opt(3.0, "perturbation norm ρ over the drawn layers' attention outputs (the README's run: 3)")
    probability_steps: int = opt(200, "optimizer steps between layer-importance updates (K)")
    lisa_interval_steps: int = opt(20, "optimizer steps between layer draws (J)")
    activated_layers: int = opt(8, "layers drawn each time (S); at most the model's layer count")
    below_active: str = opt("freeze", "layers below the lowest un-checkpointed one: freeze (no gradient there, "
                                      "MLP adapters included, as the authors' checkpointing) | train (their MLP "
                                      "adapters keep training)")

    def validate(self, where: str) -> None:
        one_of(self.below_active, ("freeze", "train"), f"{where}.below_active")
        if self.rho < 0 or min(self.probability_steps, self.lisa_interval_steps, self.activated_layers) < 1:
            raise ConfigError(f"{where}: rho must be >= 0; probability_steps, lisa_interval_steps, activated_layers >= 1")


def layer_importance(grads: list[torch.Tensor]) -> torch.Tensor:
    """p_l = ‖g_l‖₂ / Σ_j ‖g_j‖₂ over the layers' attention-output gradients: (L,)."""
    norms = torch.stack([g.float().norm(p=2) for g in grads])
    return norms / norms.sum()


# The authors' patched Llama runs the layer below each drawn layer outside checkpointing too when the model has
# more than this many layers (issue 17's line-by-line reading of T-Vaccine's modeling file; not re-checked here).
UNCHECKPOINTED_BELOW_MIN_LAYERS = 26


def lowest_trained_layer(active: list[int], n_layers: int) -> int:
    """The lowest layer that gets gradients in the interval under the authors' checkpointing."""
    return max(min(active) - (1 if n_layers > UNCHECKPOINTED_BELOW_MIN_LAYERS else 0), 0)


def draw_layers(probabilities: torch.Tensor, k: int, generator: torch.Generator) -> list[int]:
    """k distinct layer indices drawn one after another with probability proportional to p among those not yet
    drawn (numpy's choice(replace=False, p=...), as the authors' code), sorted."""
    return sorted(torch.multinomial(probabilities, k, replacement=False, generator=generator).tolist())


class TVaccine(Method):
    Config = TVaccineConfig
    streams = ("train", "harmful")
    data_kind, model_kind = "examples", "causal_lm"

    def __init__(self, cfg: TVaccineConfig, total_steps: int):
        self.cfg = cfg
        self.probabilities: torch.Tensor | None = None
        self.active: list[int] = []
        self.last_step = -1
        self.generator = torch.Generator()
        self.applied = False  # whether `active` has been applied to the model's requires_grad flags

    def setup(self, model, streams, ctx: MethodContext) -> None:
        self.layers = attention_modules(model)
        if self.cfg.activated_layers > len(self.layers):
            raise ConfigError(f"t_vaccine.activated_layers={self.cfg.activated_layers} but the model has "
                              f"{len(self.layers)} layers")
        self.layer_params = [[p for p in layer.parameters() if p.requires_grad] for layer in self.layers]
        # the rest of each decoder layer's trainable parameters (the MLP adapters): the attention module's parent
        names = [name.removesuffix(".self_attn") for name, m in unwrap(model).named_modules() if name.endswith(".self_attn")]
        attention = {id(p) for params in self.layer_params for p in params}
        self.other_params = [[p for p in unwrap(model).get_submodule(name).parameters()
                              if p.requires_grad and id(p) not in attention] for name in names]
        self.generator.manual_seed(torch.initial_seed() % 2**63)

    def _update_importance(self, model, streams) -> None:
        batch = next(streams["harmful"])
        one = {k: v[:1] for k, v in batch.items()}  # one harmful example, as the code's batch size 1
        for params in self.layer_params:  # gradients reach every layer while importance is measured
            for p in params:
                p.requires_grad_(True)
        with captured_outputs(self.layers) as outputs:
            loss = causal_lm_loss(unwrap(model), one)
        self.probabilities = layer_importance(list(torch.autograd.grad(loss, outputs))).cpu()
        self.applied = False

    def _apply_active(self) -> None:
        lowest = 0 if self.cfg.below_active == "train" else lowest_trained_layer(self.active, len(self.layers))
        for i, (params, others) in enumerate(zip(self.layer_params, self.other_params)):
            for p in params:
                p.requires_grad_(i in self.active)
            for p in others:
                p.requires_grad_(i >= lowest)
        self.applied = True

    def step(self, model, streams, step: int) -> StepOutput:
        events = []
        if step != self.last_step:
            if step % self.cfg.probability_steps == 0:
                self._update_importance(model, streams)
            if step % self.cfg.lisa_interval_steps == 0:
                self.active = draw_layers(self.probabilities, self.cfg.activated_layers, self.generator)
                self.applied = False
                events.append(f"t_vaccine: step {step}: layers {self.active} "
                              f"(p = {[round(p, 3) for p in self.probabilities.tolist()]})")
            self.last_step = step
        if not self.applied:
            self._apply_active()
        modules = [self.layers[i] for i in self.active]
        loss, metrics = perturbed_loss(model, next(streams["train"]), modules, self.cfg.rho, causal_lm_loss)
        return StepOutput(loss, {"nll": metrics["clean_loss"], "perturbed_nll": loss.item(),
                                 "activation_grad_norm": metrics["activation_grad_norm"]}, events)

    def state_dict(self) -> dict:
        return {"probabilities": self.probabilities, "active": self.active, "last_step": self.last_step,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.probabilities, self.active, self.last_step = state["probabilities"], state["active"], state["last_step"]
        self.generator.set_state(state["generator"])
        self.applied = False  # re-applied to the model at the next step
