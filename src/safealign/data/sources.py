"""A dataset family's rows as examples: `SourceConfig` names the family, path and split, `SOURCES` the families
(one module each, turning rows of its real schema into examples, `formats.py`), `load_examples` reads them. The
same code reads the hub and local files; 'mini:' paths arrive resolved into the mini world's directories."""

from __future__ import annotations

from dataclasses import dataclass

from safealign.config import one_of, opt
from safealign.data import (agnews, alpaca, beavertails, beavertails_refusals, donotanswer, gsm8k, harmbench, pairs,
                            pku_saferlhf, responses, sst2, text, tofu)
from safealign.data.files import load_rows
from safealign.errors import ConfigError, DataError

SOURCES = {
    "beavertails": beavertails,
    "beavertails_refusals": beavertails_refusals,  # BeaverTails with refusal answers (T-Vaccine's, Booster's alignment data)
    "sst2": sst2,
    "agnews": agnews,
    "gsm8k": gsm8k,
    "alpaca": alpaca,
    "pku_saferlhf": pku_saferlhf,
    "pairs": pairs,  # SFT on the chosen / rejected responses of a preference-pairs file
    "responses": responses,  # prompt/response rows, e.g. `safealign generate` output
    "tofu": tofu,  # question/answer rows (TOFU and its mini twin, WHP QA)
    "text": text,  # raw text rows {text}, untemplated (WMDP corpora, WHP text, C4, Wikitext)
    "harmbench": harmbench,  # HarmBench's standard behaviours {prompt, category}: harmful prompts without answers
    "donotanswer": donotanswer,  # Do-Not-Answer {question, risk_area, types_of_harm, ...}: prompts without answers
}


@dataclass
class SourceConfig:
    source: str = opt("", "dataset family, a key of safealign.data.sources.SOURCES (beavertails, beavertails_refusals, sst2, "
                          "agnews, gsm8k, alpaca, pku_saferlhf, pairs, responses, tofu, text, harmbench, donotanswer)")
    path: str = opt("", "hub id, local file (.jsonl/.json/.parquet), local directory, 'mini:NAME' or 'real:NAME'")
    split: str = opt("train", "split to read (ignored for a single file); on the hub CONFIG:SPLIT picks a config too "
                              "(locuslab/TOFU forget10:train)")
    select: str = opt("all", "row filter, per family: beavertails all|safe|unsafe (by is_safe); beavertails_refusals "
                             "refusal|all|unsafe (the refusal answers, or prompt/response); "
                             "pku_saferlhf safe|unsafe|all; pairs chosen|rejected|all; donotanswer all|even|odd "
                             "(interleaved halves, every risk area in each); others all")
    start: int = opt(0, "skip the first N rows (after select): keeps e.g. a defense's harmful rows apart from the attack's")

    def validate(self, where: str) -> None:
        if not self.source or not self.path:
            raise ConfigError(f"{where}: both 'source' and 'path' are required")
        one_of(self.source, tuple(SOURCES), f"{where}.source")
        one_of(self.select, select_choices(self.source), f"{where}.select (source {self.source})")
        if self.start < 0:
            raise ConfigError(f"{where}.start: must be >= 0")


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
