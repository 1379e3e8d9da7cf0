"""Stage kinds, one file each: the stage's config dataclass and `run(unit) -> dict` (what done.json records).

A stage config's `paths()` yields (what, field, value) for everything it reads, its main input first (the
'input' of `--dry-run`): what is "model" or "data" (a path, hub id or 'stage:' / 'mini:' reference, checked
before the run by preflight.py), "precision" (the device must support it) or "tracker" (its package must be installed). `run` receives a unit whose
config and model have every 'stage:' and 'mini:' reference resolved to a path (pipeline.py).
"""

from safealign.stages import difficulty, eval, export, generate, pairs, prepare, train

STAGE_KINDS = {"train": train.TrainStage, "eval": eval.EvalStage, "pairs": pairs.PairsStage,
               "generate": generate.GenerateStage, "prepare": prepare.PrepareStage,
               "difficulty": difficulty.DifficultyStage, "export": export.ExportStage}
RUNNERS = {"train": train.run, "eval": eval.run, "pairs": pairs.run, "generate": generate.run, "prepare": prepare.run,
           "difficulty": difficulty.run, "export": export.run}
