"""Checkpoints of a train stage: `checkpoints/step-N` holds everything a resume needs (the trained
parameters, optimizer, schedule, method and stream states, each process's RNG state). One is complete or
absent: it is written as `.tmp-step-N` and renamed. Resuming reads a checkpoint whole before applying any of it,
so a damaged one is passed over for the one before it (or step 0), never half-applied."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from safealign.io import atomic_write_text


def _rng_state() -> dict:
    mt, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [mt, keys.tolist(), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    mt, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((mt, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints_newest_first(out_dir: Path) -> list[Path]:
    return sorted((out_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]), reverse=True)


def latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = checkpoints_newest_first(out_dir)
    return ckpts[0] if ckpts else None


def save_checkpoint(out_dir, step, trained: dict, optimizer, scheduler, method, streams, accelerator, keep: int = 1) -> Path:
    """`trained`: name -> parameter of everything the optimizer trains (fixed at the start of training, so a
    method that freezes some of them for a while, as T-Vaccine does, still checkpoints them all)."""
    root = Path(out_dir) / "checkpoints"
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        params = {k: v.detach().cpu().contiguous() for k, v in trained.items()}
        save_file(params, str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(method.state_dict(), tmp / "method.pt")
        (tmp / "state.json").write_text(json.dumps(
            {"step": step, "streams": {k: s.state_dict() for k, s in streams.items()}}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp.rename(final)
        for old in checkpoints_newest_first(Path(out_dir))[keep:]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


class DamagedCheckpoint(Exception):
    pass


def read_checkpoint(path: Path, process_index: int) -> dict:
    """Everything a checkpoint holds, read in full before any of it is applied, so that a damaged one (a file
    cut by a full disk or a copy, one missing) is found before it has changed the model or the optimizer.
    Any failure to read is damage: the resume falls back to an earlier checkpoint or to step 0."""
    try:
        return {"trainable": load_file(str(path / "trainable.safetensors")),
                "optimizer": torch.load(path / "optimizer.pt", weights_only=True),
                "scheduler": torch.load(path / "scheduler.pt", weights_only=True),
                "method": torch.load(path / "method.pt", weights_only=True),
                "state": json.loads((path / "state.json").read_text()),
                # without its RNG state a resumed run would draw other numbers than the uninterrupted one
                "rng": torch.load(path / f"rng-{process_index}.pt", weights_only=True)}
    except Exception as e:  # noqa: BLE001 -- whatever the damage, the answer is the same: do not use it
        raise DamagedCheckpoint(f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'unreadable'}") from None


def apply_checkpoint(saved: dict, trained: dict, optimizer, scheduler, method, streams) -> int:
    with torch.no_grad():
        for name, p in trained.items():
            p.copy_(saved["trainable"][name].to(p.device, p.dtype))
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    method.load_state_dict(saved["method"])
    for name, s in streams.items():
        s.load_state_dict(saved["state"]["streams"][name])
    _set_rng_state(saved["rng"])
    return saved["state"]["step"] + 1


def resume(out_dir: Path, trained: dict, optimizer, scheduler, method, streams, accelerator) -> int:
    """The step to start from: after the newest checkpoint that reads whole, or 0. A damaged checkpoint is
    renamed `damaged-step-N` (kept, out of the rotation) with a one-line warning; metrics.jsonl is cut back
    to the step resumed from, so the steps a killed run logged after its checkpoint are not there twice."""
    start, damaged = 0, []
    ckpts = checkpoints_newest_first(out_dir)
    for ckpt in ckpts:
        try:
            saved = read_checkpoint(ckpt, accelerator.process_index)
        except DamagedCheckpoint as e:
            damaged.append(ckpt)
            then = "trying the one before" if ckpt != ckpts[-1] else "restarting the stage from step 0"
            accelerator.print(f"   warning: checkpoint {ckpt} is damaged ({e}); {then}")
            continue
        start = apply_checkpoint(saved, trained, optimizer, scheduler, method, streams)
        accelerator.print(f"resumed from {ckpt} at step {start}")
        break
    accelerator.wait_for_everyone()  # every process has read before the damaged ones are renamed
    if accelerator.is_main_process:
        for ckpt in damaged:
            ckpt.rename(ckpt.with_name(f"damaged-{ckpt.name}"))
        truncate_metrics(out_dir / "metrics.jsonl", start)
    return start


def truncate_metrics(path: Path, start: int) -> None:
    """Keep the rows of the optimizer steps before `start` (a log row's "step" counts steps done, an event's is
    the 0-based step it happened in); a cut last line goes too."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if line.endswith("\n") and (row.get("step", 0) < start if "event" in row else row.get("step", 0) <= start):
            kept.append(line)
    atomic_write_text(path, "".join(kept))
