"""Evaluations by name. Each module has a `Config` and `run(cfg, model, tokenizer) -> (metrics, records)`."""

from types import SimpleNamespace

from safealign.evals import harmful_score, task_accuracy

EVALS = {
    "harmful_score": SimpleNamespace(Config=harmful_score.HarmfulScoreConfig, run=harmful_score.run),
    "finetune_accuracy": SimpleNamespace(Config=task_accuracy.TaskAccuracyConfig, run=task_accuracy.run),
}
