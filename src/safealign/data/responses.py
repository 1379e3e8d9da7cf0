"""Prompt/response rows (`prompt`, `response`; other fields such as the reward and cost ignored): what
`safealign generate` writes as distillation data, and a plain format for SFT data of one's own. WHP's files in
SOUL (OPTML-Group/SOUL, local) have this schema: the Harry Potter QA (hp_qa.jsonl) and the copyright prompts
(hp_{train,test}_qa_{100,300}.jsonl: a text prefix and its continuation); so do their twins, `mini:whp` splits
`qa` and `prefixes`."""

from __future__ import annotations

from safealign.data.common import example, require
from safealign.data.files import Rows
from safealign.errors import DataError

SELECT = ("all",)  # no row filter: `safealign generate` already kept only the responses that passed


def examples(rows: Rows, select: str) -> list[dict]:
    out = []
    for i in range(len(rows)):
        row = require(rows, i, ("prompt", "response"))
        for name in ("prompt", "response"):
            if not isinstance(row[name], str):
                raise DataError(f"{rows.where(i)}: field '{name}' must be a string, got {type(row[name]).__name__}")
        out.append(example(row["prompt"], row["response"]))
    return out
