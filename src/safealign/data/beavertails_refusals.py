"""BeaverTails with refusals (`beavertails_with_refusals_train.json`, from the RepNoise authors; the Booster
README links it as anonymous4486/booster_dataset): BeaverTails 30k_train rows, `prompt`, `response`, `category`,
`is_safe`, plus `refusal`, a refusing answer written as "Question: {prompt}\nAnswer: {answer}".

T-Vaccine and Booster align on the refusals (their `SupervisedDataset`: the text before "\nAnswer: " less
"Question: " is the instruction, the rest the answer), Booster takes its harmful rows from the same file's
`response` field (every row), and T-Vaccine its importance rows from the file's unsafe rows."""

from __future__ import annotations

from safealign.data.common import example, require
from safealign.data.files import Rows
from safealign.errors import DataError

FIELDS = ("prompt", "response", "is_safe", "refusal")
SELECT = ("refusal", "all", "unsafe")  # the refusal answers | prompt/response of every row | of is_safe false rows
ANSWER = "\nAnswer: "


def examples(rows: Rows, select: str) -> list[dict]:
    out = []
    for i in range(len(rows)):
        row = require(rows, i, FIELDS)
        if not isinstance(row["is_safe"], bool):
            raise DataError(f"{rows.where(i)}: field 'is_safe' must be true or false, got {row['is_safe']!r}")
        if select == "unsafe" and row["is_safe"]:
            continue
        if select != "refusal":
            out.append(example(row["prompt"], row["response"], is_safe=row["is_safe"]))
            continue
        question, sep, answer = str(row["refusal"]).partition(ANSWER)
        if not sep:
            raise DataError(f"{rows.where(i)}: field 'refusal' must read 'Question: ...\\nAnswer: ...', "
                            f"got {str(row['refusal'])[:60]!r}")
        out.append(example(question.replace("Question: ", "", 1), answer, is_safe=True, refusal=True))
    return out
