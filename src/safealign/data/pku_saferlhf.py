"""PKU-SafeRLHF (PKU-Alignment/PKU-SafeRLHF): `prompt`, `response_0`, `response_1`, `better_response_id`,
`safer_response_id`, `is_response_0_safe`, `is_response_1_safe` (plus harm categories and severities, unused
here); splits train / test. Each row ranks the same two responses twice, so it gives two preference pairs:
a helpful pair (chosen = the better response) and a harmless pair (chosen = the safer response). The better
response is often the unsafe one, which is what makes the two preferences pull against each other.

Contradictory rows, where the response marked safer is labelled unsafe and the other one safe, exist in the
real data. The safety ranking and the safety labels disagree, so the row gives no usable harmless pair: it is
counted in the stats and dropped from the harmless pairs only. Its helpful pair is kept, because the
helpfulness ranking does not depend on the safety labels.

SafePKU, SOUL's unlearning forget set (the unsafe responses of PKU-SafeRLHF), is this family with `select: unsafe`:
one prompt/response example per response labelled unsafe.
"""

from __future__ import annotations

from safealign.data.common import example, require
from safealign.data.files import Rows
from safealign.errors import DataError

FIELDS = ("prompt", "response_0", "response_1", "better_response_id", "safer_response_id",
          "is_response_0_safe", "is_response_1_safe")


def pairs(rows: Rows) -> tuple[list[dict], list[dict], dict]:
    """(helpful pairs, harmless pairs, stats). Pairs are {prompt, chosen, rejected, chosen_is_safe,
    rejected_is_safe}; stats count rows, pairs, contradictory rows and how many rows have 2/1/0 safe answers."""
    helpful, harmless = [], []
    stats = {"rows": len(rows), "contradictory": 0, "both_safe": 0, "one_safe": 0, "both_unsafe": 0}
    for i in range(len(rows)):
        row = _checked(rows, i)
        safe = (row["is_response_0_safe"], row["is_response_1_safe"])
        stats[("both_unsafe", "one_safe", "both_safe")[sum(safe)]] += 1
        helpful.append(_pair(row, row["better_response_id"], safe))
        safer = row["safer_response_id"]
        if _contradictory(safer, safe):
            stats["contradictory"] += 1
            continue
        harmless.append(_pair(row, safer, safe))
    stats.update(helpful=len(helpful), harmless=len(harmless))
    return helpful, harmless, stats


SELECT = ("safe", "unsafe", "all")


def examples(rows: Rows, select: str) -> list[dict]:
    """SFT examples, instruction = prompt, by `select`:
    safe:   the safer response, where it is labelled safe (rows whose safer response is unsafe - both unsafe,
            or contradictory - are skipped: fine-tuning on them would teach the harm);
    unsafe: every response labelled unsafe (harmful fine-tuning data);
    all:    both responses of every row.
    (SFT on the more helpful responses is the `pairs` source on helpful pairs with select=chosen.)"""
    out = []
    for i in range(len(rows)):
        row = _checked(rows, i)
        for j in _selected(row, select):
            out.append(example(row["prompt"], row[f"response_{j}"], is_safe=row[f"is_response_{j}_safe"],
                               better=row["better_response_id"] == j))
    return out


def _selected(row: dict, select: str) -> list[int]:
    if select == "safe":
        safer = row["safer_response_id"]
        return [safer] if row[f"is_response_{safer}_safe"] else []
    if select == "unsafe":
        return [j for j in (0, 1) if not row[f"is_response_{j}_safe"]]
    return [0, 1]


def _checked(rows: Rows, i: int) -> dict:
    row = require(rows, i, FIELDS)
    for name in ("prompt", "response_0", "response_1"):
        if not isinstance(row[name], str):
            raise DataError(f"{rows.where(i)}: field '{name}' must be a string, got {type(row[name]).__name__}")
    for name in ("better_response_id", "safer_response_id"):
        # exactly int: True (a bool is an int) or 1.0 would pass `in (0, 1)` and then index the wrong key
        if type(row[name]) is not int or row[name] not in (0, 1):
            raise DataError(f"{rows.where(i)}: field '{name}' must be 0 or 1, got {row[name]!r}")
    for name in ("is_response_0_safe", "is_response_1_safe"):
        if not isinstance(row[name], bool):
            raise DataError(f"{rows.where(i)}: field '{name}' must be true or false, got {row[name]!r}")
    return row


def _contradictory(safer: int, safe: tuple[bool, bool]) -> bool:
    return not safe[safer] and safe[1 - safer]


def _pair(row: dict, chosen: int, safe: tuple[bool, bool]) -> dict:
    return {"prompt": row["prompt"], "chosen": row[f"response_{chosen}"], "rejected": row[f"response_{1 - chosen}"],
            "chosen_is_safe": safe[chosen], "rejected_is_safe": safe[1 - chosen]}
