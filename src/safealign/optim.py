"""SophiaG, the clipped second-order optimizer of Sophia (Liu et al. 2023, https://arxiv.org/abs/2305.14342), as
SOUL uses it for unlearning (Jia et al. 2024, https://arxiv.org/abs/2404.18239; OPTML-Group/SOUL
src/optim/sophia.py, itself from Liuhong99/Sophia sophia.py). Derivation, defaults and deviations:
docs/methods.md (the SophiaG section and its defaults table).

Per parameter tensor θ with gradient g (the loop's accumulated, clipped gradient), at optimizer step t = 1, 2, ...
(η: the group's current lr, λ: its weight decay, k: `hessian_interval`, element-wise operations):

    if (t - 1) mod k == 0:  h ← β2·h + (1 − β2)·g⊙g        Hessian EMA; ĥ = g⊙g, SOUL's estimate (not the paper's GNB)
    θ ← θ − η·λ·θ                                          decoupled weight decay
    m ← β1·m + (1 − β1)·g                                   one momentum update per step
    θ ← θ − η·sign(m)·min(|m| / (ρ·bs·h + ε), 1)            ε = 1e-15, bs = 5120 (SOUL's step() default)

so every coordinate moves by at most η (plus the weight decay). m and h start at 0. With k = 1 (SOUL) h is
updated before the step that uses it, so h is never 0 where g is not.
"""

from __future__ import annotations

import torch

EPS = 1e-15  # SOUL/Sophia add it to the denominator: ratio = |m| / (ρ·bs·h + 1e-15), clamped to 1
SOUL_BS = 5120  # SOUL's Trainer calls optimizer.step() without bs, so SophiaG.step's default 5120 applies


class SophiaG(torch.optim.Optimizer):
    """SophiaG with the squared current gradient as the diagonal Hessian estimate (SOUL's code), see the module
    docstring for the update. State per parameter: `step` (0-dim float tensor, as torch's Adam), `exp_avg` (m),
    `hessian` (h); all of it is in `state_dict()`, so a resumed run continues exactly."""

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.95), rho: float = 0.04,
                 weight_decay: float = 0.0, hessian_interval: int = 1, bs: int = SOUL_BS):
        if lr < 0.0 or rho < 0.0 or weight_decay < 0.0:
            raise ValueError(f"SophiaG: lr, rho and weight_decay must be >= 0, got {lr}, {rho}, {weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError(f"SophiaG: betas must be two numbers in [0, 1), got {betas}")
        if hessian_interval < 1 or bs < 1:
            raise ValueError(f"SophiaG: hessian_interval and bs must be >= 1, got {hessian_interval}, {bs}")
        defaults = dict(lr=lr, betas=tuple(betas), rho=rho, weight_decay=weight_decay,
                        hessian_interval=hessian_interval, bs=bs)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            scale = group["rho"] * group["bs"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SophiaG does not support sparse gradients")
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, h = state["exp_avg"], state["hessian"]
                if int(state["step"]) % group["hessian_interval"] == 0:
                    h.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                state["step"] += 1
                p.mul_(1 - lr * wd)
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                ratio = (m.abs() / (scale * h + EPS)).clamp_(max=1.0)
                p.addcmul_(m.sign(), ratio, value=-lr)
        return loss
