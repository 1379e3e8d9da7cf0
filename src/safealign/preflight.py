"""Checks before a run starts, each failing fast with one clear message: model and data paths exist (or the
hub can serve them), the output disk has room, the device supports the requested precision."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from safealign.errors import SafealignError
from safealign.io import looks_like_hub_id
from safealign.models import check_model_path

MIN_FREE_GB = 1.0


def preflight(recipe, units, run_dir: Path) -> None:
    todo = [u for u in units if not u.cached]
    for unit in todo:
        cfg = unit.config
        where = f"stages.{unit.stage}"
        if unit.kind == "train":
            check_model_path(cfg.model.path, f"{where}.model.path")
            for name in ("task", "poison", "guide", "harmful", "forget", "retain"):
                source = getattr(cfg.data, name)
                if source is not None:
                    check_data_path(source.path, f"{where}.data.{name}.path")
            for name, path in cfg.data.pairs.items():
                check_data_path(path, f"{where}.data.pairs.{name}")
            for name in ("validation", "candidates", "messages", "difficulty"):
                if getattr(cfg.data, name):
                    check_data_path(getattr(cfg.data, name), f"{where}.data.{name}")
            check_precision(cfg.train.precision, f"{where}.train.precision")
        elif unit.kind == "pairs":
            check_data_path(cfg.path, f"{where}.path")
        elif unit.kind == "generate":
            check_model_path(cfg.model.path, f"{where}.model.path")
            check_data_path(cfg.prompts, f"{where}.prompts")
            for name in ("reward_model", "cost_model"):
                if getattr(cfg, name):
                    check_model_path(getattr(cfg, name), f"{where}.{name}")
        elif unit.kind == "prepare":
            check_model_path(cfg.tokenizer, f"{where}.tokenizer")
            for k, source in enumerate(cfg.sources):
                check_data_path(source.path, f"{where}.sources[{k}].path")
        elif unit.kind == "difficulty":
            check_model_path(cfg.model.path, f"{where}.model.path")
            check_data_path(cfg.forget.path, f"{where}.forget.path")
        elif unit.kind == "export":
            check_model_path(cfg.model, f"{where}.model")
        else:
            check_model_path(unit.model, f"{where}.models.{unit.label}")
            for name, eval_cfg in cfg.evals.items():
                for field, path in _eval_data_paths(eval_cfg):
                    check_data_path(path, f"{where}.evals.{name}.{field}")
                if getattr(eval_cfg, "judge", None) == "moderation":
                    check_model_path(eval_cfg.judge_path, f"{where}.evals.{name}.judge_path")
    if todo:
        check_disk(run_dir)


def _eval_data_paths(eval_cfg):
    """The data an evaluation reads: a source or a path (`data`), a pairs file (`pairs`) or a prompts file (`prompts`)."""
    names = {f.name for f in dataclasses.fields(eval_cfg)}
    if "data" in names:
        yield ("data", eval_cfg.data) if isinstance(eval_cfg.data, str) else ("data.path", eval_cfg.data.path)
    for name in ("pairs", "prompts"):
        if name in names:
            yield name, getattr(eval_cfg, name)


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
