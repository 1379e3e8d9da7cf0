"""What a method is: a config dataclass, the streams it draws from, and `step` returning a loss.

Every method subclasses `Method`, whose class attributes are what it declares to the pipeline (each has a
default here, so a method states only what differs):

- `Config`: its config dataclass (with `registry_name`, its key in METHODS).
- `streams`: the streams it cannot do without ('train' always; 'guide' from data.guide, 'harmful' from
  data.harmful, 'forget' / 'retain' for unlearning, or for pair methods the keys of data.pairs), checked when
  the config is read.
- `data_kind`: what its streams are built from (data/training.py STREAMS): "examples" (prompt/response rows
  from data.task, or conversations from data.messages), "pairs" (data.pairs), "candidates" (scored candidate
  rewrites), "unlearn" (data.forget and data.retain).
- `model_kind`: "causal_lm", or "score" (a ScoreModel with a scalar head).
- `continues_adapter`: true where the method means to keep training the start model's own LoRA adapter
  (`lora.init: auto` then continues it; EWC: its Fisher and anchors are those of the aligned adapter).
- `pair_labels`: pair methods only: the per-pair fields every pair must carry (checked before the model loads).
- `rewrite_forget(forget, retain, cfg, seed)`: unlearning only: new forget rows before tokenization (CL, IDK and
  RL give new answers); the rows unchanged by default.

Methods never call backward() or optimizer.step(): the loop (loop.py) does. `setup(model, streams, ctx)` runs
once before the first step (ctx: a MethodContext); `step(model, streams, step)` is called once per
micro-batch; `step` is the optimizer-step index, the same for every micro-batch of a step. `state_dict()` /
`load_state_dict()` carry what must survive a resume (Lisa's anchors, a Lagrange multiplier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from safealign.data.prompts import ALPACA, PromptFormat
from safealign.losses.sft import batch_token_mean, sequence_nll


@dataclass
class MethodContext:
    """What a method may need at setup besides the model and its streams."""

    work_dir: Path  # the stage directory: where a method caches what it computes once
    tokenizer: Any = None  # the policy's tokenizer, for methods that generate
    prompt: PromptFormat = ALPACA  # the stage's data.prompt: what the policy's own prompts look like


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, what the loop back-propagates
    metrics: dict[str, float] = field(default_factory=dict)  # averaged over each logging interval
    events: list[str] = field(default_factory=list)  # one-off lines written to the log as they happen


class Method:
    """The protocol every method follows; the defaults are a method with nothing to set up or checkpoint."""

    Config: ClassVar[type]
    streams: ClassVar[tuple[str, ...]] = ("train",)
    data_kind: ClassVar[str] = "examples"
    model_kind: ClassVar[str] = "causal_lm"
    continues_adapter: ClassVar[bool] = False
    pair_labels: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg, total_steps: int = 0):
        self.cfg = cfg
        self.total_steps = total_steps

    @staticmethod
    def rewrite_forget(forget: list[dict], retain: list[dict], cfg, seed: int) -> list[dict]:
        return forget

    def setup(self, model, streams, ctx: MethodContext) -> None:
        pass

    def step(self, model, streams, step: int) -> StepOutput:
        raise NotImplementedError(f"{type(self).__name__}.step")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def causal_lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Batch token-mean NLL of the labelled (response) tokens: every labelled token of the batch weighs the same,
    as HF Trainer's causal-LM loss (SFT, the NLL terms of Lisa, Vaccine, Booster, EWC and the unlearning methods)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return batch_token_mean(*sequence_nll(logits, batch["labels"]))


def trainable_parameters(model) -> dict[str, torch.Tensor]:
    """Trainable parameters by name, without the 'module.' prefix DDP adds, so anchors saved by a
    one-process run load into a multi-process one."""
    return {name.removeprefix("module."): p for name, p in model.named_parameters() if p.requires_grad}
