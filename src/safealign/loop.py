"""THE training loop, on accelerate: accumulation, clipping, schedules, precision, logging, checkpoints, resume.

Methods compute a loss per micro-batch (methods/base.py); everything else happens here, once, for every
method. DDP/FSDP/DeepSpeed come from `accelerate launch`, not from this file.

Checkpoints (checkpoints.py) hold the trainable weights, optimizer, scheduler, each rank's RNG states, the
streams' positions and the method's own state (e.g. Lisa's anchors), so a resumed run reproduces the losses of
an uninterrupted one.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from safealign.checkpoints import resume, save_checkpoint
from safealign.config import one_of, opt
from safealign.data.prompts import ALPACA, PromptFormat
from safealign.errors import ConfigError, SafealignError
from safealign.io import append_jsonl, progress_kwargs
from safealign.methods.base import MethodContext, trainable_parameters
from safealign.optim import SophiaG
from safealign.trackers import TRACKERS, Tracking

NO_DECAY = ("bias", "norm")  # as HF Trainer: no weight decay on biases and normalisation weights


@dataclass
class TrainConfig:
    # How a run reports and checkpoints, not what it computes: left out of the unit hash, so editing one of
    # these reruns nothing (resuming from any checkpoint gives the same result as an uninterrupted run).
    NOT_HASHED: ClassVar[tuple[str, ...]] = ("log_every", "eval_every", "save_every", "report_to")

    lr: float = opt(1e-4, "peak learning rate (AdamW or SophiaG)")
    epochs: float = opt(1.0, "passes over the task data (the 'train' stream)")
    max_steps: int = opt(0, "optimizer steps; > 0 overrides epochs")
    batch_size: int = opt(8, "micro-batch size per process")
    grad_accum: int = opt(1, "micro-batches per optimizer step")
    weight_decay: float = opt(0.0, "decoupled weight decay of AdamW or SophiaG (not applied to biases and norm weights)")
    optimizer: str = opt("adamw", "adamw | sophiag (Sophia's clipped second-order update as SOUL uses it, optim.py)")
    adam_betas: list[float] = opt([0.9, 0.999], "AdamW betas")
    sophia_betas: list[float] = opt([0.9, 0.95], "SophiaG (β1 momentum, β2 Hessian EMA); SOUL's configs; "
                                                 "β1=0.81 reproduces SOUL's code, which updates the momentum twice a step")
    sophia_rho: float = opt(0.04, "SophiaG ρ: the step is lr·sign(m)·min(|m|/(ρ·5120·h), 1); SOUL's configs")
    hessian_interval: int = opt(1, "SophiaG: optimizer steps between Hessian EMA updates (k); SOUL: every step")
    warmup_ratio: float = opt(0.0, "share of steps with linear warm-up from 0")
    warmup_steps: int = opt(0, "warm-up length in optimizer steps; > 0 overrides warmup_ratio")
    scheduler: str = opt("constant", "learning-rate schedule after warm-up: constant, cosine, linear")
    max_grad_norm: float = opt(1.0, "clip the gradient norm to this; 0 disables clipping")
    precision: str = opt("fp32", "fp32, bf16 or fp16 (mixed precision through accelerate)")
    tf32: bool = opt(False, "allow TF32 matmuls on Ampere+ GPUs")
    log_every: int = opt(10, "optimizer steps per log line / metrics.jsonl row")
    eval_every: int = opt(0, "optimizer steps between evaluations on data.validation (also after the last step); 0 = only after the last")
    save_every: int = opt(250, "optimizer steps between checkpoints (the last one kept), so a killed stage resumes "
                               "from it; 0 = none")
    report_to: list[str] = opt([], "trackers of this stage besides the recipe's report_to: tensorboard, wandb")
    shuffle: bool = opt(True, "reshuffle the training data every epoch")

    def validate(self, where: str) -> None:
        one_of(self.scheduler, ("constant", "cosine", "linear"), f"{where}.scheduler")
        one_of(self.precision, ("fp32", "bf16", "fp16"), f"{where}.precision")
        one_of(self.optimizer, ("adamw", "sophiag"), f"{where}.optimizer")
        if self.optimizer == "sophiag" and (len(self.sophia_betas) != 2 or not all(0 <= b < 1 for b in self.sophia_betas)
                                            or self.sophia_rho < 0 or self.hessian_interval < 1):
            raise ConfigError(f"{where}: sophia_betas must be two numbers in [0, 1), sophia_rho >= 0 and "
                              f"hessian_interval >= 1; got {self.sophia_betas}, {self.sophia_rho}, {self.hessian_interval}")
        for tracker in self.report_to:
            one_of(tracker, tuple(TRACKERS), f"{where}.report_to")
        if self.eval_every < 0 or self.warmup_steps < 0:
            raise ConfigError(f"{where}: eval_every and warmup_steps must be >= 0")
        if self.grad_accum < 1:
            raise ConfigError(f"{where}.grad_accum: must be >= 1, got {self.grad_accum}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"{where}.warmup_ratio: must be within [0, 1), got {self.warmup_ratio}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"{where}.lr: must be a finite number > 0, got {self.lr}")
        if self.max_steps < 0 or not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"{where}: max_steps must be >= 0 (0: go by epochs) and epochs a finite number > 0; "
                              f"got max_steps {self.max_steps}, epochs {self.epochs}")
        if self.log_every < 1 or self.save_every < 0:
            raise ConfigError(f"{where}: log_every must be >= 1 and save_every >= 0; got {self.log_every}, {self.save_every}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0) or self.weight_decay < 0:
            raise ConfigError(f"{where}: max_grad_norm and weight_decay must be finite and >= 0; "
                              f"got {self.max_grad_norm}, {self.weight_decay}")


def make_accelerator(cfg: TrainConfig, log_dir: Path | None = None, trackers: list[str] = ()):
    from accelerate import Accelerator  # lazy: accelerate pulls in much of transformers' import time

    if cfg.tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.precision]
    return Accelerator(mixed_precision=precision, log_with=list(trackers) or None,
                       project_dir=str(log_dir) if log_dir else None)


def total_steps(cfg, train_stream) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * train_stream.batches_per_epoch / cfg.grad_accum))


def build_optimizer(model, cfg) -> torch.optim.Optimizer:
    """`cfg.optimizer` (AdamW or SophiaG, optim.py) over the trainable parameters; biases and norm weights get no
    weight decay. SophiaG's Hessian estimate is the squared gradient its step() sees (SOUL's), so it needs no
    extra pass from the loop."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(k in name.lower() for k in NO_DECAY) else decay).append(p)
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    if cfg.optimizer == "sophiag":
        return SophiaG(groups, lr=cfg.lr, betas=tuple(cfg.sophia_betas), rho=cfg.sophia_rho,
                       hessian_interval=cfg.hessian_interval)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.adam_betas))


def build_scheduler(optimizer, cfg, steps: int):
    """Linear warm-up over `warmup_steps` (or ceil(warmup_ratio · steps)) steps, then constant, cosine (to 0)
    or linear (to 0)."""
    warmup = cfg.warmup_steps or math.ceil(cfg.warmup_ratio * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, steps - warmup)
        if cfg.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if cfg.scheduler == "linear":
            return max(0.0, 1.0 - progress)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------------------------- the loop


class _Window:
    """Averages of the metrics of every micro-batch since the last log line."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def pop(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums, self.counts = {}, {}
        return out


def train(model, method, streams: dict, cfg, out_dir: Path, accelerator, seed: int, stop_after: int | None = None,
          until: Callable[[int, torch.nn.Module], bool] | None = None,
          evaluate: Callable[[torch.nn.Module], dict] | None = None, tokenizer=None,
          prompt: PromptFormat = ALPACA, tracking: Tracking | None = None) -> dict:
    """Run `method` for the configured number of optimizer steps; resume from the latest checkpoint in
    `out_dir` if there is one. `stop_after` (tests) stops after that many steps, as a kill would.
    `until(step, model)`, asked after each logging interval, ends training early when it returns True
    (early stopping on a held-out check). `evaluate(model) -> metrics`, called every `cfg.eval_every` steps
    and after the last, writes an `eval_*` row to metrics.jsonl. `tokenizer` and `prompt` (the data's
    prompt format) reach methods that generate. `tracking` (trackers.py): the trackers that get every log row
    and evaluation, on an accelerator made with them.
    Returns {"steps", "final_loss", "model", "setup_s" (the method's setup), "step_s" (seconds per step)}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    steps = total_steps(cfg, streams["train"])
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    trained = trainable_parameters(model)  # before a method may freeze any of them
    t_setup = time.perf_counter()
    method.setup(model, streams, MethodContext(out_dir, tokenizer, prompt))
    setup_s = time.perf_counter() - t_setup
    device_streams = {k: _OnDevice(s, accelerator.device) for k, s in streams.items()}

    start = resume(out_dir, trained, optimizer, scheduler, method, streams, accelerator)
    if tracking:
        tracking.start(accelerator)

    metrics_file = out_dir / "metrics.jsonl"
    window = _Window()
    params = list(trained.values())
    t_last, tokens_last = time.perf_counter(), _tokens(streams)
    t_loop = t_last
    last_loss = float("nan")
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=f"train {out_dir.name}",
               disable=not accelerator.is_main_process, **progress_kwargs())
    model.train()
    for step in bar:
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            sync = micro == cfg.grad_accum - 1
            with (nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
                out = method.step(model, device_streams, step)
            accelerator.backward(out.loss / cfg.grad_accum)
            step_loss += out.loss.item() / cfg.grad_accum
            window.add({"loss": out.loss.item(), **out.metrics})
            for line in out.events:
                if accelerator.is_main_process:
                    bar.write(line)
                    append_jsonl(metrics_file, {"step": step, "event": line})
        if not math.isfinite(step_loss):  # a NaN adapter must not be saved, cached and evaluated as a result
            raise SafealignError(f"{out_dir.name}: the loss is {step_loss} at step {step + 1}; the stage stops with "
                                 f"nothing saved (lower train.lr, or check the data)")
        if cfg.max_grad_norm > 0:
            grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            window.add({"grad_norm": float(grad_norm)})
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        last_loss = step_loss
        done = step + 1
        if done % cfg.log_every == 0 or done == steps:
            now, tokens = time.perf_counter(), _tokens(streams)
            row = {"step": done, "lr": scheduler.get_last_lr()[0], "epoch": round(streams["train"].epoch_float, 4),
                   **{k: round(v, 6) for k, v in window.pop().items()},
                   "tokens_per_s": round((tokens - tokens_last) * accelerator.num_processes / max(now - t_last, 1e-9), 1)}
            t_last, tokens_last = now, tokens
            if accelerator.is_main_process:
                append_jsonl(metrics_file, row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                bar.write(" ".join(f"{k}={v}" for k, v in row.items()))
            if tracking:
                accelerator.log(row, step=done)
        if evaluate is not None and (cfg.eval_every and done % cfg.eval_every == 0 or done == steps):
            _log_evaluation(evaluate, model, done, metrics_file, accelerator, bar, bool(tracking))
        if until is not None and done % cfg.log_every == 0 and done < steps:
            stop = until(done, model)
            model.train()  # the check may have switched to eval mode
            if stop:
                steps = done
                break
        if stop_after is not None and done >= stop_after:
            save_checkpoint(out_dir, step, trained, optimizer, scheduler, method, streams, accelerator)
            return {"steps": done, "final_loss": last_loss, "stopped": True}
        if cfg.save_every and done % cfg.save_every == 0 and done < steps:
            save_checkpoint(out_dir, step, trained, optimizer, scheduler, method, streams, accelerator)
    bar.close()
    if tracking:
        accelerator.end_training()
    # seconds per step of this session's steps (a resumed run times only its own): what a method costs
    step_s = (time.perf_counter() - t_loop) / max(steps - start, 1)
    return {"steps": steps, "final_loss": last_loss, "model": accelerator.unwrap_model(model),
            "setup_s": round(setup_s, 3), "step_s": round(step_s, 4)}


def _log_evaluation(evaluate, model, step: int, metrics_file: Path, accelerator, bar, to_trackers: bool) -> None:
    with torch.no_grad():
        row = {"step": step, **{f"eval_{k}": round(v, 6) for k, v in evaluate(model).items()}}
    model.train()  # the evaluation may have switched to eval mode
    if accelerator.is_main_process:
        append_jsonl(metrics_file, row)
        bar.write(" ".join(f"{k}={v}" for k, v in row.items()))
    if to_trackers:
        accelerator.log(row, step=step)


def _tokens(streams) -> int:
    return sum(s.tokens_seen for s in streams.values())


class _OnDevice:
    """A stream whose batches arrive on the training device."""

    def __init__(self, stream, device):
        self.stream, self.device = stream, device

    def __iter__(self):
        return self

    def __next__(self):
        return {k: v.to(self.device, non_blocking=True) for k, v in next(self.stream).items()}
