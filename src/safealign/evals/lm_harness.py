"""lm-evaluation-harness on the evaluated model, in process (the loaded model is handed to lm-eval's HFLM, so a
merged LoRA chain is evaluated as loaded). Offline on local task YAMLs: `include_path` is a task directory and the
harness's own task index is skipped when `include_defaults` is false (the default when an include_path is given;
the stock tasks such as cmmlu, ceval-valid, hellaswag and winogrande need their datasets from the hub or its cache).

Writes `eval/lm_harness.results.json` (the harness's raw results) and `eval/lm_harness.results.csv` (one row per
task and metric); metrics in results.json are `<task>/<metric>` (e.g. `mini_colours/acc`).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from safealign.config import opt
from safealign.data.prompts import prompt_record
from safealign.errors import SafealignError
from safealign.io import atomic_write_json, atomic_write_text


@dataclass
class LmHarnessConfig:
    registry_name = "lm_harness"
    tasks: list[str] = opt(["cmmlu", "ceval-valid", "hellaswag", "winogrande"], "lm-eval task names")
    include_path: str = opt("", "directory of local task YAMLs (e.g. 'mini:lm_eval_tasks'); empty = stock tasks only")
    include_defaults: bool = opt(False, "also index lm-eval's stock tasks (about 11 s; needed for the default tasks)")
    num_fewshot: int = opt(0, "few-shot examples per question")
    batch_size: int = opt(16, "lm-eval batch size")
    num: int = opt(0, "first N documents per task; 0 = all", was="limit")


def multiple_choice_task(name: str, data_file) -> str:
    """A local lm-eval task YAML over a JSONL file of {question, choices, answer (index)}: accuracy of the choice
    with the highest log-likelihood after the question."""
    return (f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data_file}\ntest_split: test\n"
            "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
            "doc_to_target: answer\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")


def rows_of(results: dict) -> list[dict]:
    """One row per (task, metric) from lm-eval's `results` section: {task, metric, filter, value, stderr}."""
    rows = []
    for task, values in results.items():
        for key, value in values.items():
            if "," not in key or key.split(",")[0].endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            stderr = values.get(f"{metric}_stderr,{filter_name}")
            rows.append({"task": task, "metric": metric, "filter": filter_name, "value": value,
                         "stderr": stderr if isinstance(stderr, (int, float)) else None})
    return rows


def run(cfg: LmHarnessConfig, model, tokenizer, out_dir: Path) -> tuple[dict, list[dict]]:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise SafealignError("the lm_harness evaluation needs lm-evaluation-harness: pip install 'safealign[eval]'") from None

    include = cfg.include_path or None
    manager = TaskManager(include_path=include, include_defaults=cfg.include_defaults or not include)
    unknown = [t for t in cfg.tasks if t not in manager.all_tasks]
    if unknown:
        raise SafealignError(f"lm_harness.tasks: unknown task(s) {', '.join(unknown)}"
                             + (f" in {include}" if include else "") + " (set include_path / include_defaults)")
    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, device=device)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(cfg.tasks), num_fewshot=cfg.num_fewshot, task_manager=manager,
                                  limit=cfg.num or None, log_samples=False, bootstrap_iters=0)
    rows = rows_of(out["results"])
    atomic_write_json(out_dir / "lm_harness.results.json", {k: out.get(k) for k in ("results", "versions", "n-shot", "higher_is_better")})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["task", "metric", "filter", "value", "stderr"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "lm_harness.results.csv", text.getvalue())
    metrics = {f"{r['task']}/{r['metric']}": round(r["value"], 4) for r in rows}
    # lm-eval renders each task's own doc_to_text, no chat template; it keeps the prompts only in logged samples
    return {**metrics, "prompt": prompt_record("lm_eval", None)}, rows
