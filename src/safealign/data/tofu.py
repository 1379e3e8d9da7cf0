"""TOFU (Maini et al. 2024, locuslab/TOFU): question/answer rows `{question, answer}` about fictitious authors;
the subsets (full, forget01/05/10, retain99/95/90, holdout01/05/10 (authors never in full: the non-members of
membership inference), *_perturbed with `paraphrased_answer` and a list of `perturbed_answer`,
real_authors_perturbed, world_facts_perturbed) are the splits (`locuslab/TOFU` configs on the hub, e.g.
`holdout10:train`; `{subset}.jsonl` files locally, `mini:tofu`). SFT reads them as the question prompting the answer.

Any other `{question, answer}` QA file reads with this family too (SOUL's WHP QA is {prompt, response}: the
`responses` family)."""

from __future__ import annotations

from safealign.data.common import example, require
from safealign.data.files import Rows
from safealign.errors import DataError

SELECT = ("all",)


def examples(rows: Rows, select: str) -> list[dict]:
    out = []
    for i in range(len(rows)):
        row = require(rows, i, ("question", "answer"))
        for name in ("question", "answer"):
            if not isinstance(row[name], str) or not row[name].strip():
                raise DataError(f"{rows.where(i)}: field '{name}' must be a non-empty string")
        out.append(example(row["question"], row["answer"], index=i))
    return out


def perturbed_rows(rows: Rows) -> list[dict]:
    """Checked *_perturbed rows: question, answer, paraphrased_answer, perturbed_answer (a non-empty list)."""
    out = []
    for i in range(len(rows)):
        row = require(rows, i, ("question", "answer", "paraphrased_answer", "perturbed_answer"))
        if not isinstance(row["perturbed_answer"], list) or not row["perturbed_answer"]:
            raise DataError(f"{rows.where(i)}: field 'perturbed_answer' must be a non-empty list of answers")
        out.append(row)
    if not out:
        raise DataError(f"{rows.origin}: empty split")
    return out
