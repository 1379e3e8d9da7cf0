"""Evaluations by name. Each module has a `Config` and `run(cfg, model, tokenizer) -> (metrics, records)`; its
`Evaluation` entry says what the eval stage loads for it (`model_kind`: a causal LM, or a score model, reward /
cost) and whether run() also takes `out_dir=` (the unit's eval directory) for files of its own (`writes_files`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from safealign.evals import (arena, backdoor, copyright, harmful_score, lm_harness, mia, pair_odds, perplexity, score_accuracy,
                             task_accuracy, tofu, toxicity, wmdp)


@dataclass(frozen=True)
class Evaluation:
    Config: type
    run: Callable
    model_kind: str = "causal_lm"
    writes_files: bool = False


EVALS = {
    "harmful_score": Evaluation(harmful_score.HarmfulScoreConfig, harmful_score.run),
    "finetune_accuracy": Evaluation(task_accuracy.TaskAccuracyConfig, task_accuracy.run),
    "arena": Evaluation(arena.ArenaConfig, arena.run),
    "score_accuracy": Evaluation(score_accuracy.ScoreAccuracyConfig, score_accuracy.run, model_kind="score"),
    "backdoor_cleaning": Evaluation(backdoor.BackdoorCleaningConfig, backdoor.run),
    "tofu": Evaluation(tofu.TofuConfig, tofu.run),
    "pair_odds": Evaluation(pair_odds.PairOddsConfig, pair_odds.run),
    "lm_harness": Evaluation(lm_harness.LmHarnessConfig, lm_harness.run, writes_files=True),
    "wmdp": Evaluation(wmdp.WmdpConfig, wmdp.run),
    "perplexity": Evaluation(perplexity.TextPerplexityConfig, perplexity.run),
    "toxicity": Evaluation(toxicity.ToxicityConfig, toxicity.run),
    "copyright": Evaluation(copyright.CopyrightConfig, copyright.run),
    "mia": Evaluation(mia.MiaConfig, mia.run),
}
