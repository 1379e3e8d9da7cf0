"""Recipes as a plan of cached units, and running them in a run directory.

A recipe's stages expand into units: a train stage is one unit, an eval stage one unit per model. A unit's
hash covers its resolved config, the hashes of the units it reads, and the mini world's version; a unit whose
`done.json` holds its hash is reused, so a rerun after a crash resumes at the first unfinished unit (and a
half-trained unit resumes from its last checkpoint), and a finished recipe reruns in seconds.

run_dir/
  config.yaml             the resolved recipe
  stages/<stage>/         a train unit: model/ (adapter or full model), checkpoints/, metrics.jsonl, config.yaml, done.json
  stages/<stage>/<label>/ an eval unit: eval/<name>.json, eval/<name>.samples.jsonl, done.json
  results.json  report.md  results.png  timings.json
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from safealign.config import apply_overrides, build, dump_yaml, load_yaml, to_dict
from safealign.errors import ConfigError
from safealign.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from safealign.schema import EvalStage, Recipe, TrainStage

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
    import difflib

    close = difflib.get_close_matches(ref, shipped_recipes(), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown recipe '{ref}' (shipped: {', '.join(shipped_recipes())}){hint}")


def load_recipe(ref: str, overrides: list[str] = ()) -> Recipe:
    return load_recipe_dict(apply_overrides(load_yaml(recipe_path(ref)), list(overrides)))


def single_stage_recipe(kind: str, config_path: str, overrides: list[str] = ()) -> Recipe:
    """`safealign train|eval CONFIG`: a one-stage recipe, through the same schema and run directory."""
    data = apply_overrides(load_yaml(config_path), list(overrides))
    top = {k: data.pop(k) for k in ("name", "seed", "output_dir") if k in data}
    name = top.get("name", Path(config_path).stem)
    data.setdefault("kind", kind)
    if data["kind"] != kind:
        raise ConfigError(f"{config_path}: kind is '{data['kind']}' but `safealign {kind}` runs {kind} stages")
    return load_recipe_dict({**top, "name": name, "stages": {name: data}})


def load_recipe_dict(data: dict) -> Recipe:
    """Build and validate a recipe; stages without their own seed take the recipe's."""
    recipe = build(Recipe, data)
    for stage in recipe.stages.values():
        if stage.seed < 0:
            stage.seed = recipe.seed
    return recipe


def run_dir_of(recipe: Recipe) -> Path:
    return Path(recipe.output_dir or Path("runs") / recipe.name)


# --------------------------------------------------------------------------------------------------- plan


@dataclass
class Unit:
    name: str  # "align" or "evaluate/sft"
    stage: str
    kind: str  # train | eval
    config: object  # the TrainStage or EvalStage
    out_dir: Path
    inputs: dict[str, str] = field(default_factory=dict)  # model ref -> unit name it comes from
    label: str = ""  # eval units: the model's label in results.json
    model: str = ""  # the model path or stage ref this unit loads
    hash: str = ""
    cached: bool = False


def plan(recipe: Recipe) -> list[Unit]:
    run_dir = run_dir_of(recipe)
    units: list[Unit] = []
    by_stage: dict[str, Unit] = {}
    for name, stage in recipe.stages.items():
        if isinstance(stage, TrainStage):
            unit = Unit(name, name, "train", stage, run_dir / "stages" / name, model=stage.model.path)
            _link(unit, stage.model.path, by_stage, f"stages.{name}.model.path")
            units.append(unit)
            by_stage[name] = unit
        else:
            for label, ref in stage.models.items():
                unit = Unit(f"{name}/{label}", name, "eval", stage, run_dir / "stages" / name / label, label=label, model=ref)
                _link(unit, ref, by_stage, f"stages.{name}.models.{label}")
                units.append(unit)
    for unit in units:
        unit.hash = _unit_hash(unit, {u.name: u.hash for u in units})
        unit.cached = _done_hash(unit.out_dir) == unit.hash
    return units


def _link(unit: Unit, ref: str, by_stage: dict[str, Unit], where: str) -> None:
    if ref.startswith("stage:"):
        target = ref.removeprefix("stage:")
        if target not in by_stage:
            raise ConfigError(f"{where}: '{ref}' names no earlier train stage (have {', '.join(by_stage) or 'none'})")
        unit.inputs[ref] = by_stage[target].name


def _unit_hash(unit: Unit, hashes: dict[str, str]) -> str:
    from safealign.mini.world import VERSION

    config = to_dict(unit.config)
    if unit.kind == "eval":
        config = {**config, "models": {unit.label: unit.model}}
    payload = {"config": config, "inputs": {ref: hashes[name] for ref, name in unit.inputs.items()},
               "mini_world": VERSION if "mini:" in json.dumps(config) else None, "cache_version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _done_hash(out_dir: Path) -> str | None:
    done = out_dir / "done.json"
    if not done.exists():
        return None
    return json.loads(done.read_text()).get("hash")


def describe_plan(recipe: Recipe, units: list[Unit]) -> str:
    lines = [f"recipe {recipe.name}: {recipe.description}".rstrip(": "), f"run directory: {run_dir_of(recipe)}", ""]
    for i, u in enumerate(units, 1):
        state = "cached" if u.cached else "will run"
        lines.append(f"[{i}] {u.name} ({u.kind}, {state}, hash {u.hash})")
        lines.append(f"    input:  {u.model}" + (f"  (from unit {u.inputs[u.model]})" if u.model in u.inputs else ""))
        lines.append(f"    output: {u.out_dir}")
        if u.kind == "train" or u.label == next(iter(u.config.models)):
            body = dump_yaml(u.config if u.kind == "train" else {**to_dict(u.config), "models": "(each listed)"})
            lines += ["    config:"] + [f"      {line}" for line in body.rstrip().splitlines()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- run


def resolve_ref(ref: str, units_by_name: dict[str, Unit], unit: Unit) -> str:
    if ref.startswith("stage:"):
        return str(units_by_name[unit.inputs[ref]].out_dir / "model")
    return ref


def run_recipe(recipe: Recipe) -> dict:
    from safealign.preflight import preflight
    from safealign.report import write_report

    run_dir = run_dir_of(recipe)
    units = plan(recipe)
    preflight(recipe, units, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_yaml(recipe))
    by_name = {u.name: u for u in units}
    timings = {}
    for unit in units:
        if unit.cached:
            print(f"== {unit.name}: cached ({unit.out_dir})", flush=True)
        else:
            print(f"== {unit.name}: running", flush=True)
            _prepare_dir(unit)
            result = run_unit(unit, by_name)
            atomic_write_json(unit.out_dir / "done.json", {"hash": unit.hash, **result})
        timings[unit.name] = json.loads((unit.out_dir / "done.json").read_text()).get("meter", {})
    results = collect_results(units)
    atomic_write_json(run_dir / "results.json", results)
    atomic_write_json(run_dir / "timings.json", timings)
    write_report(recipe, run_dir, results, timings)
    return results


def _prepare_dir(unit: Unit) -> None:
    """A unit directory left by another config is wiped; one left by this config (a killed run) is kept,
    so training resumes from its last checkpoint."""
    stamp = unit.out_dir / "unit.json"
    if unit.out_dir.exists() and (not stamp.exists() or json.loads(stamp.read_text())["hash"] != unit.hash):
        shutil.rmtree(unit.out_dir)
    unit.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, {"hash": unit.hash, "name": unit.name})
    atomic_write_text(unit.out_dir / "config.yaml", dump_yaml(unit.config))


def run_unit(unit: Unit, by_name: dict[str, Unit]) -> dict:
    from safealign.measure import StageMeter

    with StageMeter() as meter:
        result = _run_train(unit, by_name) if unit.kind == "train" else _run_eval(unit, by_name)
    return {**result, "meter": meter.result()}


def _run_train(unit: Unit, by_name: dict[str, Unit]) -> dict:
    from safealign.data.formats import tokenize_example
    from safealign.data.mixing import guide_examples, training_mix
    from safealign.data.streams import BatchStream
    from safealign.loop import make_accelerator, total_steps, train
    from safealign.methods import METHODS
    from safealign.models import add_lora, count_parameters, load_causal_lm, load_tokenizer, pick_dtype, resolve_model_path, save_model

    cfg: TrainStage = unit.config
    where = f"stages.{unit.stage}.data"
    accelerator = make_accelerator(cfg.train, unit.out_dir)
    model_path = resolve_model_path(resolve_ref(cfg.model.path, by_name, unit))
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    mix = training_mix(cfg.data, where)
    guide = guide_examples(cfg.data, where)
    tokenize = lambda examples: [tokenize_example(tokenizer, e, cfg.model.max_length) for e in examples]  # noqa: E731
    common = dict(pad_id=tokenizer.pad_token_id, shuffle=cfg.train.shuffle, rank=accelerator.process_index,
                  world_size=accelerator.num_processes)
    streams = {"train": BatchStream(tokenize(mix), cfg.train.batch_size, seed=cfg.seed, **common)}
    if guide:
        streams["guide"] = BatchStream(tokenize(guide), cfg.train.batch_size, seed=cfg.seed + 1, **common)
    dtype = pick_dtype(cfg.model.dtype, cfg.train.precision)
    model = load_causal_lm(model_path, dtype, cfg.model.trust_remote_code)
    model = add_lora(model, cfg.lora, cfg.model.gradient_checkpointing)
    trainable, total = count_parameters(model)
    steps = total_steps(cfg.train, streams["train"])
    method_cls = METHODS[cfg.method.registry_name]
    print(f"   {len(mix)} training rows ({sum(e['meta'].get('poison', False) for e in mix)} poison), "
          f"{len(guide)} guide rows; {steps} steps; {trainable:,} of {total:,} parameters trainable", flush=True)
    result = train(model, method_cls(cfg.method, steps), streams, cfg.train, unit.out_dir, accelerator, cfg.seed)
    if accelerator.is_main_process:
        save_model(result["model"], tokenizer, unit.out_dir / "model", base=model_path)
    accelerator.wait_for_everyone()
    return {"steps": result["steps"], "final_loss": result["final_loss"], "train_rows": len(mix),
            "guide_rows": len(guide), "trainable_params": trainable}


def _run_eval(unit: Unit, by_name: dict[str, Unit]) -> dict:
    import torch

    from safealign.evals import EVALS
    from safealign.models import load_causal_lm, load_tokenizer, pick_dtype

    cfg: EvalStage = unit.config
    path = resolve_ref(unit.model, by_name, unit)
    tokenizer = load_tokenizer(path, cfg.trust_remote_code)
    model = load_causal_lm(path, pick_dtype(cfg.dtype, "bf16"), cfg.trust_remote_code)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    metrics = {}
    for name, eval_cfg in cfg.evals.items():
        m, records = EVALS[name].run(eval_cfg, model, tokenizer)
        atomic_write_jsonl(unit.out_dir / "eval" / f"{name}.samples.jsonl", records)
        atomic_write_json(unit.out_dir / "eval" / f"{name}.json", m)
        metrics.update(m)
    return {"label": unit.label, "metrics": metrics}


def collect_results(units: list[Unit]) -> dict:
    results: dict[str, dict] = {}
    for u in units:
        if u.kind == "eval":
            metrics = json.loads((u.out_dir / "done.json").read_text())["metrics"]
            results.setdefault(u.label, {}).update(metrics)
    return results
