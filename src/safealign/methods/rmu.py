"""RMU, Representation Misdirection for Unlearning (Li et al. 2024, WMDP, arXiv 2403.03218 §5; code
centerforaisafety/wmdp rmu/unlearn.py). At the output h of decoder layer ℓ (`layer`, 0-based: the module
`model.model.layers[ℓ]`, which is hidden_states[ℓ + 1] of an HF forward):

    L = mean_b forget_b + mean_b retain_b     (losses.unlearning.rmu_loss, per-sample token means over H)
    forget_b = mean_t (1/H)·‖h_θ(x_f)_t − c·u‖²,   retain_b = α · mean_t (1/H)·‖h_θ(x_r)_t − h_ref(x_r)_t‖²

u is a fixed random unit vector drawn ONCE, as the WMDP code: torch.rand(H) / ‖·‖ (entries uniform on [0, 1), so
all positive), from a generator seeded with the run's seed; it is part of the method's state, so a resumed run
keeps it. h_ref is the starting model's activation (the adapter-disabled policy under LoRA, else a frozen copy).
Token positions: every non-padding position of both batches (prompt and answer tokens of QA rows alike; the WMDP
code takes every position of raw text, padding included). The activations are read with a forward hook on the
decoder layer (a peft-wrapped or a plain HF causal LM), as the WMDP code's `forward_with_cache`.

Defaults are the WMDP authors' Zephyr-7B run (run_rmu_zephyr.ipynb, the released checkpoint): layer 7, c = 6.5,
α = 1200 (rmu/unlearn.py's own defaults: c = 20, α = 100). That run updates only mlp.down_proj (param_ids 6) of
layers 5, 6, 7: `train_layers: [5, 6, 7]`, `train_modules: [mlp.down_proj]` (with full fine-tuning, or a LoRA
adapter that targets down_proj). Those flags freeze (requires_grad off) every other trainable parameter in `setup`,
after the optimizer is built: the loop collects the parameters it checkpoints before setup, and AdamW / SophiaG
skip a parameter whose grad stays None (no update, no weight decay), so the frozen ones do not move. DDP's
gradient buckets do not allow that, so `train_layers` runs in one process.

Deviations from the WMDP code: padding is masked and the means are per sample (theirs: one mean over B·T·H); u is
drawn in float32 (theirs: in the model dtype, bf16 for Zephyr); one forget and one retain corpus per run (theirs
alternate the bio and cyber corpora, one u and c per corpus).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from safealign.config import opt
from safealign.errors import ConfigError
from safealign.losses.unlearning import rmu_loss
from safealign.methods.base import Method, MethodContext, StepOutput
from safealign.models import Reference, unwrap

# peft is imported inside the functions that use it: importing takes seconds that
# commands which never reach them (--dry-run, schema, config errors) should not wait for.


def base_causal_lm(model):
    """The HF causal LM under DDP's and peft's wrappers."""
    from peft import PeftModel

    model = unwrap(model)
    return model.get_base_model() if isinstance(model, PeftModel) else model


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder layers of a (possibly DDP- or peft-wrapped) HF causal LM: `.model.layers` (Llama, Mistral, Qwen,
    Gemma, ...)."""
    return base_causal_lm(model).model.layers


@contextmanager
def layer_output(module: torch.nn.Module):
    """Collects `module`'s output hidden states (B, T, H) of each forward run inside the block (element 0 when the
    layer returns a tuple, as older transformers do)."""
    outputs: list[torch.Tensor] = []

    def hook(mod, args, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


def control_vector(hidden_size: int, seed: int) -> torch.Tensor:
    """u = r / ‖r‖, r ~ U[0, 1)^H from a generator seeded with `seed` (WMDP: torch.rand(1, 1, H) / norm). (H,) fp32."""
    r = torch.rand(hidden_size, generator=torch.Generator().manual_seed(seed))
    return r / r.norm()


@dataclass
class RMUConfig:
    registry_name = "rmu"
    layer: int = opt(7, "decoder layer ℓ (0-based) whose output is steered (WMDP Zephyr-7B: 7)")
    steering_coeff: float = opt(6.5, "c, the norm of the forget target c·u (WMDP Zephyr-7B run: 6.5; its script: 20)")
    alpha: float = opt(1200.0, "α, the weight of the retain activation loss (WMDP Zephyr-7B run: 1200; script: 100)")
    train_layers: list[int] = opt([], "decoder layers whose parameters train; the rest are frozen at setup "
                                      "(WMDP: [5, 6, 7]); empty: every trainable parameter")
    train_modules: list[str] = opt([], "within train_layers, only parameters whose name contains one of these "
                                       "(WMDP: ['mlp.down_proj']); empty: all of those layers' trainable parameters")

    def validate(self, where: str) -> None:
        if self.layer < 0 or self.steering_coeff <= 0 or self.alpha < 0 or any(i < 0 for i in self.train_layers):
            raise ConfigError(f"{where}: layer and train_layers must be >= 0, steering_coeff > 0, alpha >= 0")
        if self.train_modules and not self.train_layers:
            raise ConfigError(f"{where}.train_modules: selects parameters within train_layers; give train_layers too")


class RMU(Method):
    Config = RMUConfig
    streams = ("forget", "retain")
    data_kind, model_kind = "unlearn", "causal_lm"

    def __init__(self, cfg: RMUConfig, total_steps: int = 0):
        self.cfg = cfg
        self.control_vec: torch.Tensor | None = None

    def setup(self, model, streams, ctx: MethodContext) -> None:
        layers = decoder_layers(model)
        for i in (self.cfg.layer, *self.cfg.train_layers):
            if i >= len(layers):
                raise ConfigError(f"rmu: layer {i} but the model has {len(layers)} decoder layers (0..{len(layers) - 1})")
        self.module = layers[self.cfg.layer]
        self.reference = Reference(model)
        frozen = self.reference.frozen  # None under LoRA: the reference is the policy, adapter off, same modules
        self.ref_module = self.module if frozen is None else decoder_layers(frozen)[self.cfg.layer]
        # the loop seeded torch with the run's seed just before setup: u is the same on every rank and every rerun
        self.control_vec = control_vector(base_causal_lm(model).config.hidden_size, torch.initial_seed())
        if self.cfg.train_layers:
            self._freeze_outside(model, layers)

    def _freeze_outside(self, model, layers) -> None:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            raise ConfigError("rmu.train_layers: freezing parameters after DDP wrapped the model breaks its gradient "
                              "buckets; run in one process, or leave train_layers empty")
        keep = {id(p) for i in self.cfg.train_layers for name, p in layers[i].named_parameters()
                if p.requires_grad and (not self.cfg.train_modules or any(m in name for m in self.cfg.train_modules))}
        if not keep:
            raise ConfigError(f"rmu: no trainable parameter in layers {self.cfg.train_layers} matches train_modules "
                              f"{self.cfg.train_modules} (under LoRA, target those modules)")
        for p in model.parameters():
            if p.requires_grad and id(p) not in keep:
                p.requires_grad_(False)

    def activations(self, model, module, batch) -> torch.Tensor:
        """(B, T, H) output of `module` in `model`'s forward on `batch`."""
        with layer_output(module) as outputs:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return outputs[0]

    def step(self, model, streams, step: int) -> StepOutput:
        forget_batch, retain_batch = next(streams["forget"]), next(streams["retain"])
        forget_acts = self.activations(model, self.module, forget_batch)
        retain_acts = self.activations(model, self.module, retain_batch)
        with layer_output(self.ref_module) as outputs:
            self.reference.logits(model, retain_batch)  # no grad
        forget, retain = rmu_loss(forget_acts, retain_acts, outputs[0], self.control_vec, self.cfg.steering_coeff,
                                  self.cfg.alpha, forget_batch["attention_mask"], retain_batch["attention_mask"])
        forget, retain = forget.mean(), retain.mean()
        return StepOutput(forget + retain, {"forget_loss": forget.item(), "retain_loss": retain.item()})

    def state_dict(self) -> dict:
        return {"control_vec": self.control_vec}

    def load_state_dict(self, state: dict) -> None:
        self.control_vec = state["control_vec"]
