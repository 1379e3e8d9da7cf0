"""Evaluations by name. Each module has a `Config` and `run(cfg, model, tokenizer) -> (metrics, records)`;
`model_kind` says what the eval stage loads for it: a causal LM, or a score model (reward / cost);
`writes_files` that run() also takes `out_dir=` (the unit's eval directory) for files of its own."""

from types import SimpleNamespace

from safealign.evals import (arena, backdoor, copyright, harmful_score, lm_harness, mia, pair_odds, perplexity, score_accuracy,
                             task_accuracy, tofu, toxicity, wmdp)

EVALS = {
    "harmful_score": SimpleNamespace(Config=harmful_score.HarmfulScoreConfig, run=harmful_score.run, model_kind="causal_lm"),
    "finetune_accuracy": SimpleNamespace(Config=task_accuracy.TaskAccuracyConfig, run=task_accuracy.run,
                                         model_kind="causal_lm"),
    "arena": SimpleNamespace(Config=arena.ArenaConfig, run=arena.run, model_kind="causal_lm"),
    "score_accuracy": SimpleNamespace(Config=score_accuracy.ScoreAccuracyConfig, run=score_accuracy.run, model_kind="score"),
    "backdoor_cleaning": SimpleNamespace(Config=backdoor.BackdoorCleaningConfig, run=backdoor.run, model_kind="causal_lm"),
    "tofu": SimpleNamespace(Config=tofu.TofuConfig, run=tofu.run, model_kind="causal_lm"),
    "pair_odds": SimpleNamespace(Config=pair_odds.PairOddsConfig, run=pair_odds.run, model_kind="causal_lm"),
    "lm_harness": SimpleNamespace(Config=lm_harness.LmHarnessConfig, run=lm_harness.run, model_kind="causal_lm",
                                  writes_files=True),
    "wmdp": SimpleNamespace(Config=wmdp.WmdpConfig, run=wmdp.run, model_kind="causal_lm"),
    "perplexity": SimpleNamespace(Config=perplexity.TextPerplexityConfig, run=perplexity.run, model_kind="causal_lm"),
    "toxicity": SimpleNamespace(Config=toxicity.ToxicityConfig, run=toxicity.run, model_kind="causal_lm"),
    "copyright": SimpleNamespace(Config=copyright.CopyrightConfig, run=copyright.run, model_kind="causal_lm"),
    "mia": SimpleNamespace(Config=mia.MiaConfig, run=mia.run, model_kind="causal_lm"),
}
