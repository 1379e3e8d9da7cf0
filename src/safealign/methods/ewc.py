"""EWC as a fine-tuning-stage defense against harmful fine-tuning (the Vaccine repo's `FITrainer`,
`--optimizer EWC2`): fine-tune on the user's data with the penalty λ · Σ F · (θ − θ₀)² (losses/regularizers.py),
θ₀ the trainable weights at the start of fine-tuning and F the empirical Fisher of the alignment (guide) data.

F, as the code: one pass over the guide data in batches of `fisher_batch_size` (the script's
per_device_eval_batch_size 5: the Fisher pass reads the eval dataloader), in train mode; for each
batch the gradient of its token-mean NLL over the trainable parameters, squared element-wise and SUMMED over
batches (not averaged, so λ's scale goes with the guide set's size: the authors' scripts use λ 1e9 with 2000
rows). Computed once before the first step with torch.autograd.grad and kept, with θ₀, in the checkpoint.

θ are the weights of the adapter being trained. The script continues the aligned adapter (`lora.init: auto`
does so for EWC), so F covers every lora_A and lora_B of it; on a fresh adapter lora_B starts at 0, which makes
the gradient, and so F, of every lora_A exactly 0 (only lora_B is held back).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from safealign.config import opt
from safealign.data.formats import collate
from safealign.errors import ConfigError
from safealign.losses.regularizers import ewc_penalty
from safealign.methods.base import Method, MethodContext, StepOutput, causal_lm_loss, trainable_parameters
from safealign.models import unwrap


@dataclass
class EWCConfig:
    registry_name = "ewc"
    lamb: float = opt(1e9, "λ: weight of the Fisher-weighted distance to the starting weights (script/EWC_finetune/sst2.sh)")
    fisher_batch_size: int = opt(5, "rows per batch of the Fisher pass (the script's per_device_eval_batch_size)")

    def validate(self, where: str) -> None:
        if self.lamb < 0:
            raise ConfigError(f"{where}.lamb: must be >= 0")
        if self.fisher_batch_size < 1:
            raise ConfigError(f"{where}.fisher_batch_size: must be >= 1")


def empirical_fisher(model, params: dict[str, torch.Tensor], batches) -> dict[str, torch.Tensor]:
    """Σ_batches (∂ NLL_batch / ∂θ)², element-wise, for each tensor in `params` (float32)."""
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    for batch in batches:
        loss = causal_lm_loss(model, batch)
        for (name, _), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            fisher[name] += g.float() ** 2
    return fisher


class EWC(Method):
    Config = EWCConfig
    streams = ("train", "guide")
    data_kind, model_kind = "examples", "causal_lm"
    continues_adapter = True  # the script continues the aligned adapter (train.py: EWC -> first_lora_trainable)

    def __init__(self, cfg: EWCConfig, total_steps: int):
        self.cfg = cfg
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchors: dict[str, torch.Tensor] = {}

    def setup(self, model, streams, ctx: MethodContext) -> None:
        if "guide" not in streams:
            raise ConfigError("ewc: needs alignment data for its Fisher: set data.guide (and not data.guide_mix)")
        inner = unwrap(model)
        params = trainable_parameters(inner)
        self.anchors = {name: p.detach().clone() for name, p in params.items()}
        guide = streams["guide"]
        device = next(inner.parameters()).device
        size = self.cfg.fisher_batch_size
        batches = ({k: v.to(device) for k, v in collate(guide.features[i:i + size], guide.pad_id).items()}
                   for i in range(0, len(guide.features), size))
        inner.train()  # as the code: the Fisher pass sees the training-mode model (dropout on)
        self.fisher = empirical_fisher(inner, params, batches)

    def step(self, model, streams, step: int) -> StepOutput:
        nll = causal_lm_loss(model, next(streams["train"]))
        penalty = ewc_penalty(trainable_parameters(model), self.anchors, self.fisher, self.cfg.lamb)
        return StepOutput(nll + penalty, {"nll": nll.item(), "ewc_penalty": penalty.item()})

    def state_dict(self) -> dict:
        return {"fisher": {k: v.cpu() for k, v in self.fisher.items()}, "anchors": {k: v.cpu() for k, v in self.anchors.items()}}

    def load_state_dict(self, state: dict) -> None:
        device = next(iter(self.anchors.values())).device
        self.fisher = {k: v.to(device) for k, v in state["fisher"].items()}
        self.anchors = {k: v.to(device) for k, v in state["anchors"].items()}
