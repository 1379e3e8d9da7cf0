"""Dataset families. Each module turns rows of its real schema into examples (`formats.py`); the same code
reads the hub, local files and the mini world."""

from __future__ import annotations

from safealign.data import agnews, alpaca, beavertails, gsm8k, pairs, pku_saferlhf, responses, sst2, text, tofu
from safealign.data.files import load_rows
from safealign.errors import DataError

SOURCES = {
    "beavertails": beavertails,
    "sst2": sst2,
    "agnews": agnews,
    "gsm8k": gsm8k,
    "alpaca": alpaca,
    "pku_saferlhf": pku_saferlhf,
    "pairs": pairs,  # SFT on the chosen / rejected responses of a preference-pairs file
    "responses": responses,  # prompt/response rows, e.g. `safealign generate` output
    "tofu": tofu,  # question/answer rows (TOFU and its mini twin, WHP QA)
    "text": text,  # raw text rows {text}, untemplated (WMDP corpora, WHP text, C4, Wikitext)
}


def select_choices(source: str) -> tuple[str, ...]:
    """The row filters (`select`) a family offers."""
    if source not in SOURCES:
        raise DataError(f"unknown data source '{source}' (have {', '.join(SOURCES)})")
    return SOURCES[source].SELECT


def load_examples(cfg) -> list[dict]:
    """The examples of a SourceConfig in file order, from row `start` on (counted after `select`)."""
    if cfg.select not in select_choices(cfg.source):
        raise DataError(f"source '{cfg.source}' has no select '{cfg.select}' (have {', '.join(select_choices(cfg.source))})")
    rows = load_rows(cfg.path, cfg.split)
    out = SOURCES[cfg.source].examples(rows, cfg.select)[cfg.start:]
    if not out:
        raise DataError(f"{rows.origin}: no rows{'' if cfg.select == 'all' else f' with select={cfg.select}'}"
                        f"{f' after the first {cfg.start}' if cfg.start else ''}")
    return out
