"""Perturbations of attention outputs, shared by Vaccine and T-Vaccine (git-disl/Vaccine `VaccineTrainer`,
Lslland/T-Vaccine): hooks on each decoder layer's attention module (`*.self_attn`) read or shift element 0 of
its output, the attention output after o_proj and before the residual add, as the authors' hooks do.

Hooks, not patched model files: any HF decoder whose layers name their attention `self_attn` (Llama, Mistral,
Qwen, Gemma, OPT, ...) works unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from safealign.errors import SafealignError
from safealign.models import unwrap

NORM_EPS = 1e-7  # the authors' `grad_norm + 1e-7`


def attention_modules(model) -> list[torch.nn.Module]:
    """The attention module of every decoder layer, in layer order."""
    modules = [m for name, m in model.named_modules() if name.endswith(".self_attn")]
    if not modules:
        raise SafealignError(f"{type(model).__name__} has no '*.self_attn' modules: Vaccine-style perturbation "
                             f"needs a decoder whose attention modules are named self_attn")
    return modules


def joint_norm(tensors) -> torch.Tensor:
    """sqrt(Σ ‖t‖²) over all tensors together (one L2 norm over every layer, as the authors' `_grad_norm`)."""
    return torch.norm(torch.stack([t.float().norm(p=2) for t in tensors]), p=2)


def perturbation(grads: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """Vaccine's ε_l = ρ · g_l / (‖g‖ + 1e-7), g_l the gradient of the loss w.r.t. layer l's attention output
    and ‖g‖ the joint L2 norm over all perturbed layers: the ascent direction, of total norm ρ (up to the eps)."""
    scale = rho / (joint_norm(grads) + NORM_EPS)
    return [(g * scale).detach() for g in grads]


@contextmanager
def captured_outputs(modules: list[torch.nn.Module]):
    """Collects each module's output[0] (in module order) during the forwards run inside the block, so the
    caller can take torch.autograd.grad of a loss with respect to them."""
    outputs: list[torch.Tensor] = [None] * len(modules)  # type: ignore[list-item]

    def hook_for(i):
        def hook(module, args, output):
            outputs[i] = output[0]
        return hook

    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


@contextmanager
def shifted_outputs(modules: list[torch.nn.Module], shifts: list[torch.Tensor]):
    """Adds shifts[i] to modules[i]'s output[0] in the forwards run inside the block (the second pass)."""
    def hook_for(i):
        def hook(module, args, output):
            return (output[0] + shifts[i], *output[1:])
        return hook

    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def perturbed_loss(model, batch, modules: list[torch.nn.Module], rho: float, loss_fn) -> tuple[torch.Tensor, dict]:
    """Vaccine's two passes on one batch. Pass 1: the loss and its gradient with respect to each module's
    output (torch.autograd.grad: no parameter gradient is kept, as the authors zero them). Pass 2: the same
    batch with ε added to those outputs; its loss is returned for the loop to back-propagate.
    `loss_fn(model, batch) -> scalar`. Metrics: the clean loss and the gradient norm ‖g‖.
    Pass 1 runs on the inner model under DDP: only the pass the loop back-propagates goes through the wrapper."""
    with captured_outputs(modules) as outputs:
        clean = loss_fn(unwrap(model), batch)
    grads = torch.autograd.grad(clean, outputs)
    shifts = perturbation(list(grads), rho)
    with shifted_outputs(modules, shifts):
        loss = loss_fn(model, batch)
    return loss, {"clean_loss": clean.item(), "activation_grad_norm": float(joint_norm(grads))}
