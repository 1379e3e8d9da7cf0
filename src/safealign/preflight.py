"""Checks before a run starts, each failing fast with one clear message: model and data paths exist (or the
hub can serve them), the output disk has room, the device supports the requested precision. What to check is
what each stage declares it reads (`paths()`, stages/__init__.py); nothing here knows a stage kind."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from safealign import real
from safealign.errors import SafealignError
from safealign.io import expand_path, looks_like_hub_id
from safealign.models import check_model_path
from safealign.trackers import check_trackers

MIN_FREE_GB = 1.0


def preflight(recipe, units, run_dir: Path, dry_run: bool = False) -> None:
    """Check what every unit still to run reads (its stage's `paths()`), each path once, then the disk.
    A dry run checks the local paths only: it asks the hub nothing, and the plan of a GPU recipe may be read
    on a machine without the GPU or the disk space."""
    todo = [u for u in units if not u.cached]
    checks = {"model": lambda path, where: check_model_path(path, where, ask_hub=not dry_run), "data": check_data_path,
              "precision": (lambda precision, where: None) if dry_run else check_precision,
              "tracker": lambda name, where: check_trackers([name], where)}
    if todo:
        check_trackers(recipe.report_to, "report_to")
    seen = set()
    for unit in todo:
        for what, field, value in unit.config.paths():
            if (what, value) not in seen:
                if what in ("model", "data") and value.startswith("real:"):
                    real.check(value, what, f"stages.{unit.stage}.{field}", dry_run)
                else:
                    checks[what](expand_path(value), f"stages.{unit.stage}.{field}")
                seen.add((what, value))
    if run_dir.exists() and not run_dir.is_dir():
        raise SafealignError(f"output_dir {run_dir} is a file, not a directory")
    if todo and not dry_run:
        check_disk(run_dir)


def check_data_path(path: str, where: str) -> None:
    if path.startswith(("mini:", "stage:")) or Path(path).exists():
        return
    if not looks_like_hub_id(path):
        raise SafealignError(f"{where}: data path does not exist: {path}")


def check_precision(precision: str, where: str) -> None:
    if precision == "fp32":
        return
    if not torch.cuda.is_available():
        raise SafealignError(f"{where}: {precision} needs a CUDA GPU and none is visible; use precision=fp32 on CPU")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise SafealignError(f"{where}: this GPU does not support bf16; use fp16 or fp32")


def check_disk(run_dir: Path, min_free_gb: float = MIN_FREE_GB) -> None:
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 2**30
    if free_gb < min_free_gb:
        raise SafealignError(f"only {free_gb:.1f} GiB free under {probe}; a run needs at least {min_free_gb} GiB")
