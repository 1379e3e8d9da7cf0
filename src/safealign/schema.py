"""The recipe: its stages (each stage kind's config lives beside its code in stages/), an optional sweep, and
what the run reports. Every default lives in the dataclasses with one line of help; recipes (YAML) hold only
what differs. Method and evaluation configs live beside their code (methods/*.py, evals/*.py), chosen by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from safealign.config import build, one_of, opt, plain_name
from safealign.errors import ConfigError
from safealign.stages import STAGE_KINDS
from safealign.trackers import TRACKERS


def _stages(value: Any, where: str) -> dict:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{where}: expected a non-empty mapping of stage name -> stage")
    out = {}
    for name, stage in value.items():
        if not isinstance(stage, dict):
            raise ConfigError(f"{where}.{name}: expected a mapping")
        kind = stage.get("kind", "train")
        one_of(str(kind), tuple(STAGE_KINDS), f"{where}.{name}.kind")
        out[str(name)] = build(STAGE_KINDS[kind], stage, f"{where}.{name}")
    return out


@dataclass
class Sweep:
    """One stage setting run at several values inside one recipe (e.g. the poison ratio of every attack stage):
    each stage whose recipe sets `key`, and each stage built on such a stage, runs once per value as
    'NAME@VALUE'; an eval stage evaluates each as 'LABEL@VALUE'. Stages that do not depend on it run once."""

    key: str = opt("", "a stage setting as a dotted path inside the stage, e.g. data.poison_ratio; `seed` runs "
                       "every stage at each seed and adds each metric's mean ± std across the seeds to the results")
    values: list[Any] = opt([], "the values, e.g. [0.05, 0.1, 0.2]")

    def validate(self, where: str) -> None:
        if not self.key or not self.values:
            raise ConfigError(f"{where}: a sweep needs a 'key' and at least one value")


@dataclass
class Recipe:
    name: str = opt("run", "recipe name; also the default run directory runs/<name>")
    description: str = opt("", "one line on what the recipe reproduces")
    seed: int = opt(42, "seed for every stage that does not set its own")
    output_dir: str = opt("", "run directory; default runs/<name>")
    stages: Any = opt({}, "stage name -> stage (kind: train | eval | pairs | generate), run in order", choose_by=_stages)
    report: dict[str, str] = opt({}, "extra lines for report.md: title -> text")
    sweep: Sweep | None = opt(None, "run the stages that set one key at several values (see Sweep)")
    compute_difficulty_only: bool = opt(False, "run only the difficulty stages (and the stages they read), write "
                                               "their scores.json and stop")
    cost_baselines: dict[str, str] = opt({}, "train stage -> the stage whose seconds per step and peak memory are its "
                                             "1.0 in the report's cost table (a defense's extra cost over plain SFT)")
    report_to: list[str] = opt([], "trackers every stage reports to (tensorboard, wandb): a train stage's loss rows and "
                                   "evaluations, an eval unit's metrics; a run per unit named RECIPE/UNIT")

    def validate(self, where: str) -> None:
        for tracker in self.report_to:
            one_of(tracker, tuple(TRACKERS), f"{where}.report_to" if where else "report_to")
        if not self.stages:
            raise ConfigError(f"{where or 'recipe'}: 'stages' is required")
        plain_name(self.name, f"{where}.name" if where else "name")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed: must be within [0, 2**32), got {self.seed}")
        for stage_name, stage in self.stages.items():
            plain_name(stage_name, f"stages.{stage_name}")
            if not -1 <= getattr(stage, "seed", -1) < 2**32:
                raise ConfigError(f"stages.{stage_name}.seed: must be -1 (the recipe's) or within [0, 2**32), "
                                  f"got {stage.seed}")
            for label in stage.models if stage.kind == "eval" else ():
                plain_name(label, f"stages.{stage_name}.models.{label}")
