"""`MixedSampler`, which draws training records from (source, length bucket) groups at a target Chinese share,
and `groups_of`, which groups a kind's written output rows for it (prepare.sampler_of builds the one a
prepare config plans)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable, Iterator

from safealign.errors import ConfigError

LANGS = ("zh", "en")


# ---------------------------------------------------------------------------------------------- sampling


class MixedSampler:
    """An endless, seeded stream of records mixed across (source, bucket) groups and two languages.

    Each draw (a) picks Chinese with probability target_cn_share when both languages have records with a
    positive weight (otherwise the language that has), then (b) picks a group of that language by smooth
    weighted round-robin (deterministic, exact shares over every cycle), so a large source cannot crowd out a
    small one. Groups are split by language: the units are (source, bucket, language). Within a language a
    source of weight w gets w / (sum of the weights of the sources that have records in that language), shared
    equally by its buckets of that language; a source with records in both languages gets a share in each.
    (c) A record is taken from the group's shuffled order; an exhausted group is reshuffled. All randomness
    comes from one random.Random(seed).

    weights: {source: w}, 1 for a source not named. curriculum: stages [{"weights": {...}, "steps": n}]: a
    stage's weights replace the named sources' weights (0 leaves a source out) for its n draws; the last
    stage lasts forever."""

    def __init__(self, groups: dict[tuple[str, str], list[dict]], language_of: Callable[[dict], str],
                 target_cn_share: float = 0.7, seed: int = 0, weights: dict[str, float] | None = None,
                 curriculum: list[dict] | None = None):
        self._rng = random.Random(seed)
        self._pools: dict[tuple[str, str, str], list[dict]] = {}
        for source, bucket in sorted(groups):  # sorted: the draws depend on the seed, not on dict order
            for r in groups[(source, bucket)]:
                self._pools.setdefault((source, bucket, language_of(r)), []).append(r)
        for pool in self._pools.values():
            self._rng.shuffle(pool)
        self._cursor = dict.fromkeys(self._pools, 0)
        self.sources = sorted({s for s, _ in groups})
        base = self._weights(weights or {}, {s: 1.0 for s in self.sources}, "weights")
        self._stages = [(None, base)] if not curriculum else self._curriculum(curriculum, base)
        self._tables = [self._table(w, target_cn_share, k) for k, (_, w) in enumerate(self._stages)]
        self._step, self._active, self._credit = 0, None, {}

    def _weights(self, given: dict, base: dict[str, float], where: str) -> dict[str, float]:
        for name, w in given.items():
            if name not in base:
                raise ConfigError(f"{where}.{name}: no such source (have {', '.join(self.sources)})")
            if not w >= 0:
                raise ConfigError(f"{where}.{name}: weight must be >= 0, got {w}")
        return {**base, **{k: float(v) for k, v in given.items()}}

    def _curriculum(self, stages: list[dict], base: dict[str, float]) -> list[tuple[int, dict]]:
        out = []
        for k, stage in enumerate(stages):
            if not isinstance(stage, dict) or set(stage) != {"weights", "steps"}:
                raise ConfigError(f"curriculum[{k}]: expected {{weights: {{source: w}}, steps: n}}, got {stage!r}")
            if type(stage["steps"]) is not int or stage["steps"] < 1:
                raise ConfigError(f"curriculum[{k}].steps: must be a positive integer, got {stage['steps']!r}")
            out.append((stage["steps"], self._weights(stage["weights"], base, f"curriculum[{k}].weights")))
        return out

    def _table(self, weights: dict[str, float], target_cn_share: float, k: int) -> dict:
        """{"p_zh": probability of Chinese, "groups": {lang: [(pool key, weight), ...]}} of one stage."""
        groups = {}
        for lang in LANGS:
            keys = [key for key in self._pools if key[2] == lang and weights[key[0]] > 0]
            by_source = Counter(key[0] for key in keys)
            total = sum(weights[s] for s in by_source)
            if keys:
                groups[lang] = [(key, weights[key[0]] / total / by_source[key[0]]) for key in keys]
        if not groups:
            raise ConfigError(f"sampler stage {k}: no source with a positive weight has records")
        p_zh = target_cn_share if len(groups) == 2 else float("zh" in groups)
        return {"p_zh": p_zh, "groups": groups}

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        k = self._stage_index(self._step)
        self._step += 1
        if k != self._active:  # a new stage starts its round-robin afresh
            self._active, self._credit = k, {key: 0.0 for key in self._pools}
        table = self._tables[k]
        if len(table["groups"]) == 2:
            lang = "zh" if self._rng.random() < table["p_zh"] else "en"
        else:
            lang = next(iter(table["groups"]))
        return self._take(self._round_robin(table["groups"][lang]))

    def _stage_index(self, step: int) -> int:
        for k, (steps, _) in enumerate(self._stages[:-1]):
            if step < steps:
                return k
            step -= steps
        return len(self._stages) - 1

    def _round_robin(self, groups: list[tuple[tuple, float]]) -> tuple:
        """Smooth weighted round-robin (as nginx): every group gains its weight, the richest is served and pays
        the total. Over any run of draws each group's count is within one of weight * draws."""
        for key, w in groups:
            self._credit[key] += w
        best = max(groups, key=lambda kw: self._credit[kw[0]])[0]
        self._credit[best] -= sum(w for _, w in groups)
        return best

    def _take(self, key: tuple) -> dict:
        pool = self._pools[key]
        if self._cursor[key] == len(pool):
            self._rng.shuffle(pool)
            self._cursor[key] = 0
        self._cursor[key] += 1
        return pool[self._cursor[key] - 1]

    def plan(self) -> list[dict]:
        """Expected shares, one entry per stage: {"steps": n (None: lasts forever), "language": {zh, en},
        "sources": {source: share of all draws}, "groups": {"source|bucket|lang": share}}."""
        out = []
        for (steps, _), table in zip(self._stages, self._tables):
            language = {lang: 0.0 for lang in LANGS}
            sources = {s: 0.0 for s in self.sources}
            groups = {}
            for lang, entries in table["groups"].items():
                p = table["p_zh"] if lang == "zh" else 1 - table["p_zh"]
                language[lang] = round(p, 6)
                for (source, bucket, _), w in entries:
                    sources[source] += p * w
                    groups[f"{source}|{bucket}|{lang}"] = round(p * w, 6)
            out.append({"steps": steps, "language": language,
                        "sources": {s: round(v, 6) for s, v in sources.items()}, "groups": groups})
        return out


def groups_of(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """{(source, bucket): rows} of output rows (which carry `source` and `bucket`)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["source"], r["bucket"]), []).append(r)
    return groups
