"""The eval stage: each model of `models` is one cached unit, loaded once per model kind it needs (a causal LM, a
score model), run through every configured evaluation, its metrics and per-sample records written. Every
evaluation says how it prompted (`prompt`: the format and its first row's rendered prompt, data/prompts.py): in
eval/<name>.json as `prompt`, in results.json as `<name>_prompt`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from safealign.config import build, one_of, opt
from safealign.errors import ConfigError
from safealign.evals import EVALS
from safealign.evals.judges import JUDGES_WITH_MODEL
from safealign.io import atomic_write_json, atomic_write_jsonl
from safealign.models import load_causal_lm, load_tokenizer, pick_dtype
from safealign.score_model import load_score_model
from safealign.trackers import Tracking, log_eval_metrics


def _eval_configs(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of evaluation name -> settings")
    out = {}
    for name, settings in value.items():
        one_of(str(name), tuple(EVALS), f"{where}")
        out[name] = build(EVALS[name].Config, settings or {}, f"{where}.{name}")
    return out


@dataclass
class EvalStage:
    """Evaluate each model in `models` with every evaluation in `evals`; one cached unit per model."""

    kind: str = opt("eval", "stage kind")
    models: dict[str, str] = opt({}, "label -> model path (usually 'stage:NAME'); the labels name rows of results.json")
    evals: Any = opt({}, "evaluation name -> settings (harmful_score, finetune_accuracy)", choose_by=_eval_configs)
    dtype: str = opt("auto", "weights dtype for evaluation")
    trust_remote_code: bool = opt(False, "run the model repository's own Python code")
    seed: int = opt(-1, "random seed; -1 takes the recipe's seed")

    def validate(self, where: str) -> None:
        if not self.models:
            raise ConfigError(f"{where}.models: an eval stage needs at least one model")
        if not self.evals:
            raise ConfigError(f"{where}.evals: an eval stage needs at least one evaluation")

    def paths(self) -> Iterator[tuple[str, str, str]]:
        for label, ref in self.models.items():
            yield "model", f"models.{label}", ref
        for name, eval_cfg in self.evals.items():
            for what, field, path in _eval_paths(eval_cfg):
                yield what, f"evals.{name}.{field}", path


def _eval_paths(eval_cfg) -> Iterator[tuple[str, str, str]]:
    """What an evaluation reads, by the names its configs share: its data (a source or a path, `data`), a pairs
    file (`pairs`) or a prompts file (`prompts`), and a judge's model (`judge_path`)."""
    values = {f.name: getattr(eval_cfg, f.name) for f in dataclasses.fields(eval_cfg)}
    if "data" in values:
        data = values["data"]
        yield ("data", "data", data) if isinstance(data, str) else ("data", "data.path", data.path)
    for name in ("pairs", "prompts"):
        if name in values:
            yield "data", name, values[name]
    if values.get("judge") in JUDGES_WITH_MODEL:
        yield "model", "judge_path", values["judge_path"]


def run(unit) -> dict:
    cfg: EvalStage = unit.config
    tokenizer = load_tokenizer(unit.model, cfg.trust_remote_code)
    loaders = {"causal_lm": load_causal_lm, "score": load_score_model}
    models = {}  # one load per kind, shared by the evaluations that need it
    device = "cuda" if torch.cuda.is_available() else "cpu"
    metrics = {}
    for name, eval_cfg in cfg.evals.items():
        evaluation = EVALS[name]
        kind = evaluation.model_kind
        if kind not in models:
            models[kind] = loaders[kind](unit.model, pick_dtype(cfg.dtype, "bf16"), cfg.trust_remote_code).to(device)
        torch.manual_seed(cfg.seed)
        files = {"out_dir": unit.out_dir / "eval"} if evaluation.writes_files else {}
        m, records = evaluation.run(eval_cfg, models[kind], tokenizer, **files)
        atomic_write_jsonl(unit.out_dir / "eval" / f"{name}.samples.jsonl", records)
        atomic_write_json(unit.out_dir / "eval" / f"{name}.json", m)
        prompt = m.pop("prompt")
        metrics.update(m)
        metrics[f"{name}_prompt"] = prompt  # named per evaluation: one model's results hold several
    if unit.report_to:
        log_eval_metrics(Tracking(unit.report_to, unit.recipe, unit.name, cfg), metrics, unit.out_dir)
    return {"label": unit.label, "metrics": metrics}
