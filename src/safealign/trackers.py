"""Experiment trackers (TensorBoard, Weights & Biases) through accelerate's tracking API.

A train stage reports its loss rows each log step; an eval unit its metrics when it ends. Each tracker run is
named RECIPE/UNIT, under the project RECIPE, and gets the unit's config as its hyperparameters (flattened to
dotted keys, since TensorBoard's hparams take scalars only). A tracker whose package is missing is a one-line
error before any work (checked by preflight), not a run that logs nothing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from safealign.config import to_dict
from safealign.errors import SafealignError

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # name -> the package accelerate needs for it


def check_trackers(names, where: str) -> None:
    for name in names:
        package = TRACKERS[name]
        if importlib.util.find_spec(package) is None:
            raise SafealignError(f"{where}: tracker '{name}' needs the package '{package}', which is not installed "
                                 f"(pip install -e '.[{name}]')")


def flat_config(config) -> dict:
    """A config as {dotted.key: scalar}; lists and empty values as their text."""
    out = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (bool, int, float, str)):
            out[prefix] = value
        else:
            out[prefix] = str(value)

    walk("", to_dict(config))
    return out


@dataclass
class Tracking:
    """Where one unit reports: the trackers, the recipe (the project), the unit (the run is RECIPE/UNIT) and the
    unit's config (the run's hyperparameters)."""

    names: list[str]
    recipe: str
    unit: str
    config: object

    def start(self, accelerator) -> None:
        run_name = f"{self.recipe}/{self.unit}"
        accelerator.init_trackers(self.recipe, config=flat_config(self.config),
                                  init_kwargs={"wandb": {"name": run_name, "group": self.recipe}} if "wandb" in self.names else {})


def log_eval_metrics(tracking: Tracking, metrics: dict, logging_dir: Path) -> None:
    """An eval unit's numeric metrics, logged once (step 0) to its own tracker run."""
    from accelerate import Accelerator  # lazy: accelerate pulls in much of transformers' import time

    accelerator = Accelerator(log_with=list(tracking.names), project_dir=str(logging_dir))
    tracking.start(accelerator)
    accelerator.log({f"eval/{k}": v for k, v in metrics.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=0)
    accelerator.end_training()
