"""The Lisa data mix: `sample_num` rows of which int(poison_ratio * sample_num) are harmful, plus guide data.

As the authors' `SupervisedDataset`, the first rows of each source are taken (not a random subset), so runs
with different seeds see the same rows in a different order; the training stream does the shuffling.
"""

from __future__ import annotations

from safealign.data.sources import load_examples
from safealign.errors import DataError

_EPS = 1e-9  # int(0.1 * 1000) is 100, but int(0.29 * 100) is 28: guard the float product


def poison_counts(sample_num: int, poison_ratio: float) -> tuple[int, int]:
    """(poison rows, task rows) as the Lisa code computes them: int(r*n) and int((1-r)*n)."""
    poison = int(poison_ratio * sample_num + _EPS)
    task = int((1 - poison_ratio) * sample_num + _EPS)
    return poison, task


def training_mix(data, where: str = "data") -> list[dict]:
    """The 'train' stream's examples: poison rows first, then task rows (the order the Lisa code builds); with
    `guide_mix` (VLGuard-style) the guide rows come last and take the place of as many task rows."""
    task = load_examples(data.task)
    if data.sample_num == 0:
        return task
    n_poison, n_task = poison_counts(data.sample_num, data.poison_ratio)
    guide = guide_examples(data, where) if data.guide_mix else []
    n_task -= len(guide)
    if n_task < 0:
        raise DataError(f"{where}.guide_data_num={len(guide)} is more than the {n_task + len(guide)} task rows of sample_num")
    if n_task > len(task):
        raise DataError(f"{where}.sample_num={data.sample_num} needs {n_task} task rows but {data.task.path} "
                        f"[{data.task.split}] has {len(task)}")
    mix = []
    if n_poison:
        poison = load_examples(data.poison)
        if n_poison > len(poison):
            raise DataError(f"{where}.sample_num={data.sample_num} with poison_ratio={data.poison_ratio} needs "
                            f"{n_poison} poison rows but {data.poison.path} has {len(poison)}")
        mix += [dict(e, meta={**e["meta"], "poison": True}) for e in poison[:n_poison]]
    mix += task[:n_task]
    return mix + [dict(e, meta={**e["meta"], "guide": True}) for e in guide]


def guide_examples(data, where: str = "data") -> list[dict]:
    """The first guide_data_num guide rows (all when 0)."""
    return _first(data.guide, data.guide_data_num, f"{where}.guide_data_num")


def harmful_examples(data, where: str = "data") -> list[dict]:
    """The first harmful_num rows of the harmful data (all when 0), for the 'harmful' stream."""
    return _first(data.harmful, data.harmful_num, f"{where}.harmful_num")


def _first(source, n: int, where: str) -> list[dict]:
    if source is None:
        return []
    rows = load_examples(source)
    if n > len(rows):
        raise DataError(f"{where}={n} but {source.path} has {len(rows)} rows")
    return rows[: n or len(rows)]
