"""Raw text: rows `{text}` read as passages for forget/retain losses on text, not question/answer pairs.

Sources in this schema:
- WMDP corpora (Li et al. 2024, cais/wmdp-corpora): `bio-retain-corpus`, `cyber-forget-corpus`,
  `cyber-retain-corpus` on the hub (split `CONFIG:train`, e.g. `cyber-forget-corpus:train`); the bio forget
  corpus is gated, so it is a local file (`bio-forget-corpus.jsonl`, rows {title, abstract, text, doi}: `text`
  is read). WMDP's own code reads the cyber and retain corpus files line by line as plain text: such a file
  reads as `.txt`, one row per line.
- WHP (Eldan & Russinovich 2023): the Harry Potter text, a local .jsonl of {text} or a .txt file.
- C4 (allenai/c4, config `en`, split e.g. `en:validation`; rows {text, timestamp, url}).
- Wikitext (Salesforce/wikitext, config `wikitext-2-raw-v1`, e.g. `wikitext-2-raw-v1:test`; rows {text}).
- The mini twins: `mini:wmdp` (splits bio_forget_corpus, bio_retain_corpus, cyber_forget_corpus,
  cyber_retain_corpus), `mini:whp` (split text), `mini:c4` (train, validation), `mini:wikitext` (train, test).

Each row is one example with `meta["raw_text"]`, which `formats.tokenize_example` encodes as BOS + text + EOS with
every token labelled, cut to the model's max_length (one example per row; long texts truncated, not chunked).
Rows whose text is empty or blank are dropped, as Wikitext's separator lines are by WMDP's and SOUL's loaders
(`len(text) > min_len`); the examples keep their row index. A row without a string `text` is an error naming it.
"""

from __future__ import annotations

from safealign.data.common import example
from safealign.data.files import Rows
from safealign.errors import DataError

SELECT = ("all",)  # every non-blank row


def texts(rows: Rows, field: str = "text") -> list[tuple[int, str]]:
    """(row index, text) of every row whose `field` is not blank; a row without a string there is an error."""
    out = []
    for i, row in enumerate(rows.rows):
        if field not in row:
            raise DataError(f"{rows.where(i)}: missing field '{field}'")
        if not isinstance(row[field], str):
            raise DataError(f"{rows.where(i)}: field '{field}' must be a string, got {type(row[field]).__name__}")
        if row[field].strip():
            out.append((i, row[field]))
    return out


def examples(rows: Rows, select: str) -> list[dict]:
    return [example("", text, index=i, raw_text=True) for i, text in texts(rows)]
