"""WMDP multiple choice (Li et al. 2024, cais/wmdp): rows `{question, choices, answer}`, `choices` a list of
four answer strings and `answer` the index of the right one (0-3). Hub configs `wmdp-bio`, `wmdp-cyber`,
`wmdp-chem`, split `test` (load_rows split `wmdp-bio:test`); WMDP's released `*_questions.json` files have the
same rows; `mini:wmdp` has them as splits `bio` and `cyber`, asking facts stated in its forget corpora.
The forget/retain corpora are raw text: the `text` family (data/text.py)."""

from __future__ import annotations

from safealign.data.common import require
from safealign.data.files import Rows
from safealign.errors import DataError


def mc_rows(rows: Rows) -> list[dict]:
    """The checked rows, in file order: `question` a non-empty string, `choices` a list of at least two strings,
    `answer` an int indexing `choices`. A bad row or an empty split is a DataError naming it."""
    out = []
    for i in range(len(rows)):
        row = require(rows, i, ("question", "choices", "answer"))
        if not isinstance(row["question"], str) or not row["question"].strip():
            raise DataError(f"{rows.where(i)}: field 'question' must be a non-empty string")
        choices = row["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{rows.where(i)}: field 'choices' must be a list of at least 2 strings, got {choices!r}")
        # exactly int: True (a bool is an int) or 1.0 would index a choice by accident
        if type(row["answer"]) is not int or not 0 <= row["answer"] < len(choices):
            raise DataError(f"{rows.where(i)}: field 'answer' must be an index 0-{len(choices) - 1} into 'choices', "
                            f"got {row['answer']!r}")
        out.append(row)
    if not out:
        raise DataError(f"{rows.origin}: empty split")
    return out
