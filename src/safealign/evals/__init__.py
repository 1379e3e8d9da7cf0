"""Evaluations by name. Each module has a `Config` and `run(cfg, model, tokenizer) -> (metrics, records)`;
`model_kind` says what the eval stage loads for it: a causal LM, or a score model (reward / cost)."""

from types import SimpleNamespace

from safealign.evals import arena, backdoor, harmful_score, score_accuracy, task_accuracy

EVALS = {
    "harmful_score": SimpleNamespace(Config=harmful_score.HarmfulScoreConfig, run=harmful_score.run, model_kind="causal_lm"),
    "finetune_accuracy": SimpleNamespace(Config=task_accuracy.TaskAccuracyConfig, run=task_accuracy.run,
                                         model_kind="causal_lm"),
    "arena": SimpleNamespace(Config=arena.ArenaConfig, run=arena.run, model_kind="causal_lm"),
    "score_accuracy": SimpleNamespace(Config=score_accuracy.ScoreAccuracyConfig, run=score_accuracy.run, model_kind="score"),
    "backdoor_cleaning": SimpleNamespace(Config=backdoor.BackdoorCleaningConfig, run=backdoor.run, model_kind="causal_lm"),
}
