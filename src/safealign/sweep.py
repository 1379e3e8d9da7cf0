"""A recipe's `sweep` (schema.Sweep): one stage setting at several values inside one run directory, so the
stages that do not depend on it (alignment, score models) run once and are shared by every value.

`key: seed` sweeps every stage that draws anything (all but eval and export stages, which are expanded by the
stages they read): the recipe at each seed in one run directory, and `across_seeds` adds each metric's mean and
sample standard deviation over the seeds to the results.

Expansion works on the plain recipe dict before the schema is built, so overrides (`sweep.values=[...]`) apply
first and the expanded stages go through the same validation as written ones.
"""

from __future__ import annotations

import statistics

from safealign.errors import ConfigError

SEED_KEY = "seed"
UNSEEDED_KINDS = ("eval", "export")  # an eval stage evaluates each seed's models; an export stage draws nothing


def expand_sweep(data: dict) -> dict:
    """The raw recipe with its `sweep` unrolled (see schema.Sweep): a train/generate/pairs stage that sets the
    swept key, or reads a swept stage, becomes one stage per value, NAME@VALUE, with the value set and its
    'stage:' references pointed at the same value's stages; an eval stage's models on swept stages become
    LABEL@VALUE entries (an eval stage whose settings read a swept stage becomes one eval stage per value).
    Works on plain dicts before the schema is built, so overrides apply first."""
    sweep = data.get("sweep")
    if not sweep:
        return data
    if not isinstance(sweep, dict) or not isinstance(sweep.get("key"), str) or not isinstance(sweep.get("values"), list) \
            or not sweep["key"] or not sweep["values"]:
        raise ConfigError("sweep: expected {key: a.dotted.setting, values: [v1, v2, ...]}")
    key, values = sweep["key"].split("."), sweep["values"]
    stages, swept = {}, set()
    for name, stage in (data.get("stages") or {}).items():
        if not isinstance(stage, dict):
            stages[name] = stage
            continue
        if stage.get("kind", "train") == "eval":
            if _targets({k: val for k, val in stage.items() if k != "models"}) & swept:
                # its settings read a swept stage (a retain model, a score model): one eval stage per value, each
                # evaluating every model as LABEL@VALUE against that value's stages
                for v in values:
                    stages[f"{name}@{v}"] = {**_point_at(stage, swept, v), "models": {
                        f"{label}@{v}": _point_at(ref, swept, v) for label, ref in (stage.get("models") or {}).items()}}
                continue
            models = {}
            for label, ref in (stage.get("models") or {}).items():
                if _targets(ref) & swept:
                    models.update({f"{label}@{v}": _point_at(ref, swept, v) for v in values})
                else:
                    models[label] = ref
            stages[name] = {**stage, "models": models}
        elif _sets(stage, key) or _targets(stage) & swept:
            for v in values:
                copy = _point_at(stage, swept, v)
                if _sets(stage, key):
                    _set_path(copy, key, v)
                stages[f"{name}@{v}"] = copy
            swept.add(name)
        else:
            stages[name] = stage
    if not swept:
        raise ConfigError(f"sweep.key: no stage sets '{sweep['key']}'")
    return {**data, "stages": stages}


def _sets(stage: dict, key: list[str]) -> bool:
    if key == [SEED_KEY]:
        return stage.get("kind", "train") not in UNSEEDED_KINDS
    return _has_path(stage, key)


def across_seeds(results: dict, values: list) -> dict:
    """label -> {metric: mean, metric_std: sample standard deviation (n - 1), "seeds": [...]} over the labels
    'LABEL@SEED' of a seed sweep, for every numeric metric but the row counts (n_*); a label measured at one
    seed only gets no entry."""
    by_label: dict[str, dict[str, list[float]]] = {}
    seeds: dict[str, list] = {}
    for label, metrics in results.items():
        base, at, value = label.rpartition("@")
        if not at or value not in {str(v) for v in values}:
            continue
        seeds.setdefault(base, []).append(int(value) if value.lstrip("-").isdigit() else value)
        for key, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not key.startswith("n_"):
                by_label.setdefault(base, {}).setdefault(key, []).append(float(v))
    out = {}
    for base, metrics in by_label.items():
        if len(seeds[base]) < 2:
            continue
        row = {}
        for key, xs in metrics.items():
            row[key] = statistics.fmean(xs)
            row[f"{key}_std"] = statistics.stdev(xs) if len(xs) > 1 else 0.0
        out[base] = {**row, "seeds": seeds[base]}
    return out


def _targets(node) -> set[str]:
    """The stage names of every 'stage:NAME[/file]' string anywhere in `node`."""
    if isinstance(node, dict):
        return {t for v in node.values() for t in _targets(v)}
    if isinstance(node, list):
        return {t for v in node for t in _targets(v)}
    if isinstance(node, str) and node.startswith("stage:"):
        return {node.removeprefix("stage:").split("/")[0]}
    return set()


def _point_at(node, swept: set[str], value):
    """A copy of `node` whose 'stage:NAME[/...]' strings for swept NAMEs read 'stage:NAME@value[/...]'."""
    if isinstance(node, dict):
        return {k: _point_at(v, swept, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_point_at(v, swept, value) for v in node]
    if isinstance(node, str) and node.startswith("stage:"):
        target, slash, rest = node.removeprefix("stage:").partition("/")
        if target in swept:
            return f"stage:{target}@{value}{slash}{rest}"
    return node


def _has_path(node: dict, keys: list[str]) -> bool:
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return False
        node = node[k]
    return True


def _set_path(node: dict, keys: list[str], value) -> None:
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
