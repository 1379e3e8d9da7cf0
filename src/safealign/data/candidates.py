"""Scored candidate rewrites (FABE / Tuna data): rows `{prompt, candidates: [N strings], scores: [N numbers]}`,
or Tuna's names `{instruction, output, score}`, from a local JSON/JSONL/parquet file, a directory of splits or a
hub id. N is fixed per dataset. Extra fields (a clean reference, unit tests, the trigger) travel with the row for
the backdoor-cleaning evaluation.

Splits: as the source gives them, or by ratio (`ratios` = train, validation, test shares): the source's rows (its
`train` split when it has splits) are shuffled by a fixed generator (seed 0, whatever the run's seed, so every
stage and evaluation cuts the same way) and cut in that order.

Order: candidates are sorted best first by score; equal scores are ordered by a random permutation drawn from
(seed, row index), so no position in the file is favoured and the order is reproducible.
"""

from __future__ import annotations

import random

import torch

from safealign.data.files import load_rows
from safealign.data.formats import collate, tokenize_example
from safealign.data.prompts import PromptFormat
from safealign.errors import ConfigError, DataError

NAMES = (("prompt", "candidates", "scores"), ("instruction", "output", "score"))  # ours, Tuna's


SPLITS = ("train", "validation", "test")


def read_candidates(path: str, split: str = "train", seed: int = 0, ratios: tuple | list = ()) -> list[dict]:
    """Checked rows `{prompt, candidates, scores, ...extra}` with candidates sorted best first (see the module)."""
    rows = load_rows(path, "train" if ratios else split)
    indices = split_by_ratio(len(rows), ratios, split, rows.origin) if ratios else range(len(rows))
    out, n = [], None
    for i in indices:
        row, where = rows.rows[i], rows.where(i)
        prompt_key, cand_key, score_key = next((names for names in NAMES if names[1] in row), NAMES[0])
        for key in (prompt_key, cand_key, score_key):
            if row.get(key) is None:
                raise DataError(f"{where}: missing field '{key}'")
        prompt, candidates, scores = row[prompt_key], row[cand_key], row[score_key]
        if not isinstance(prompt, str) or not prompt:
            raise DataError(f"{where}: field '{prompt_key}' must be a non-empty string")
        if not isinstance(candidates, list) or not isinstance(scores, list):
            raise DataError(f"{where}: fields '{cand_key}' and '{score_key}' must be lists")
        n = len(candidates) if n is None else n
        if len(candidates) != n or len(scores) != n:
            raise DataError(f"{where}: {len(candidates)} candidates and {len(scores)} scores; the dataset has {n} per row")
        if n < 2:
            raise DataError(f"{where}: ranking needs at least 2 candidates, got {n}")
        for k, (c, s) in enumerate(zip(candidates, scores)):
            if not isinstance(c, str) or not c.strip():
                raise DataError(f"{where}: candidate {k} is empty or not a string")
            if isinstance(s, bool) or not isinstance(s, (int, float)):
                raise DataError(f"{where}: score {k} must be a number, got {s!r}")
        order = ranked(scores, random.Random(f"{seed}/{i}"))
        extra = {k: v for k, v in row.items() if k not in (prompt_key, cand_key, score_key)}
        out.append({**extra, "prompt": prompt, "candidates": [candidates[k] for k in order],
                    "scores": [float(scores[k]) for k in order]})
    if not out:
        raise DataError(f"{rows.origin}: no rows")
    return out


def split_by_ratio(n: int, ratios, split: str, origin: str) -> list[int]:
    """Row indices of `split` when n rows are cut by (train, validation, test) `ratios` after a fixed shuffle."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ConfigError(f"split ratios must be three non-negative numbers (train, validation, test) summing to 1, got {list(ratios)}")
    if split not in SPLITS:
        raise ConfigError(f"split '{split}': with split ratios the splits are {', '.join(SPLITS)}")
    order = list(range(n))
    random.Random(0).shuffle(order)
    cuts = [0, round(n * ratios[0]), round(n * (ratios[0] + ratios[1])), n]
    k = SPLITS.index(split)
    picked = sorted(order[cuts[k]:cuts[k + 1]])
    if not picked:
        raise DataError(f"{origin}: the {split} split is empty ({n} rows, ratios {list(ratios)})")
    return picked


def ranked(scores: list[float], rng: random.Random) -> list[int]:
    """Indices best first; ties keep the order of a random shuffle from `rng` (Python's sort is stable)."""
    shuffled = list(range(len(scores)))
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda k: -scores[k])


def tokenize_candidates(tokenizer, row: dict, max_length: int, prompt: PromptFormat) -> dict:
    """The row's N candidates as N SFT examples under the same rendered prompt (prompt masked, EOS added)."""
    return {"sequences": [tokenize_example(tokenizer, {"instruction": row["prompt"], "input": "", "output": c},
                                           max_length, prompt) for c in row["candidates"]],
            "scores": row["scores"]}


def collate_candidates(features: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """B rows of N candidates -> one (B·N, T) batch, row-major (row b's candidates at b·N .. b·N+N−1, best first),
    so one forward scores every candidate of every row; `scores` (B, N) are the gold scores."""
    batch = collate([seq for f in features for seq in f["sequences"]], pad_id)
    batch["scores"] = torch.tensor([f["scores"] for f in features], dtype=torch.float32)
    return batch
