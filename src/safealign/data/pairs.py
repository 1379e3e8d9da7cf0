"""Preference pairs: {prompt, chosen, rejected, chosen_is_safe, rejected_is_safe}. Split by prompt, written
as `{train,val,test}/{helpful,harmless}_pairs.jsonl`, and read back from ours or from TRL's preference format
(https://huggingface.co/docs/trl/dataset_formats#preference), standard or conversational.

Also a data source (`source: pairs`): SFT examples from a pairs file's chosen and/or rejected responses, e.g.
the starting policy of preference tuning trained on the chosen answers of the train split's helpful pairs."""

from __future__ import annotations

import math
import random
from pathlib import Path

from safealign.data.common import example
from safealign.data.files import Rows, load_rows
from safealign.errors import ConfigError, DataError
from safealign.io import atomic_write_jsonl

SPLITS = ("train", "val", "test")
KINDS = ("helpful", "harmless")
SELECT = ("chosen", "rejected", "all")  # which responses of a pairs file are SFT examples


def examples(rows: Rows, select: str) -> list[dict]:
    """SFT examples (instruction = prompt) from pair rows: the chosen responses, the rejected ones, or both."""
    sides = {"chosen": ("chosen",), "rejected": ("rejected",), "all": ("chosen", "rejected")}[select]
    return [example(p["prompt"], p[side], is_safe=p[f"{side}_is_safe"]) for p in trl_pairs(rows) for side in sides]


def split_pairs(helpful: list[dict], harmless: list[dict], ratios=(0.8, 0.1, 0.1), seed: int = 0) -> dict:
    """{split: {"helpful": [...], "harmless": [...]}} for train/val/test. Split by prompt: the distinct prompts
    are shuffled with `seed` and cut by `ratios`, and both kinds follow that one assignment, so no prompt is
    seen in two splits (a PKU-SafeRLHF prompt also appears in several rows). Pairs keep their input order."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split ratios must be three non-negative numbers (train, val, test) summing to 1, got {tuple(ratios)}")
    # sorted first, so the assignment depends on the set of prompts and the seed, not on the row order
    prompts = sorted({p["prompt"] for p in helpful} | {p["prompt"] for p in harmless})
    random.Random(seed).shuffle(prompts)
    cut_train, cut_val = round(len(prompts) * ratios[0]), round(len(prompts) * (ratios[0] + ratios[1]))
    where = {p: ("train" if k < cut_train else "val" if k < cut_val else "test") for k, p in enumerate(prompts)}
    out = {split: {kind: [] for kind in KINDS} for split in SPLITS}
    for kind, items in zip(KINDS, (helpful, harmless)):
        for pair in items:
            out[where[pair["prompt"]]][kind].append(pair)
    if cut_train == 0:
        raise DataError(f"the train split is empty: {len(prompts)} distinct prompts with ratios {tuple(ratios)}")
    return out


def write_pair_splits(splits: dict, out_dir: str | Path) -> dict:
    """Write each split's pairs atomically; returns {split: {kind: count}}."""
    counts = {}
    for split, kinds in splits.items():
        for kind, items in kinds.items():
            atomic_write_jsonl(Path(out_dir) / split / f"{kind}_pairs.jsonl", items)
        counts[split] = {kind: len(items) for kind, items in kinds.items()}
    return counts


def read_pairs(path: str | Path) -> list[dict]:
    """Pairs from a .jsonl/.json/.parquet file in our format or TRL's (see `trl_pairs`)."""
    path = str(path)
    if not Path(path).is_file():  # checked here: load_rows would take a missing bare name for a hub id
        raise DataError(f"pairs file does not exist: {path}")
    pairs = trl_pairs(load_rows(str(path), split=""))
    if not pairs:  # e.g. a split that a ratio of 0 left empty
        raise DataError(f"{path}: no pairs (empty file)")
    return pairs


def trl_pairs(rows: Rows) -> list[dict]:
    """Pairs from TRL preference rows. Standard: `prompt`, `chosen`, `rejected` strings (our own files are this
    plus the two safety flags). Conversational: `chosen`/`rejected` are lists of {role, content} messages
    whose last message is the assistant's answer; the prompt is the user turn(s) of `prompt` (a message list
    or a string) or, when absent, of the messages before the answer. Absent safety flags become None."""
    out = []
    for i in range(len(rows)):
        row, where = rows.rows[i], rows.where(i)
        for name in ("chosen", "rejected"):
            if row.get(name) is None:
                raise DataError(f"{where}: missing field '{name}'")
        if isinstance(row["chosen"], list):
            prompt, chosen, rejected = _conversational(row, where)
        else:
            if row.get("prompt") is None:  # TRL's implicit-prompt standard form is not guessed at
                raise DataError(f"{where}: missing field 'prompt'")
            prompt, chosen, rejected = (_text(row, name, where) for name in ("prompt", "chosen", "rejected"))
        flags = {name: row.get(name) for name in ("chosen_is_safe", "rejected_is_safe")}
        for name, value in flags.items():
            if value is not None and not isinstance(value, bool):
                raise DataError(f"{where}: field '{name}' must be true, false or null, got {value!r}")
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, **flags})
    return out


def _conversational(row: dict, where: str) -> tuple[str, str, str]:
    answers, contexts = [], []
    for name in ("chosen", "rejected"):
        messages = row[name]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: field '{name}' must be a non-empty list of messages")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not isinstance(message.get("content"), str):
                raise DataError(f"{where}: field '{name}' has a message without string 'role' and 'content': {message!r}")
        if messages[-1]["role"] != "assistant":
            raise DataError(f"{where}: field '{name}' must end with an assistant message, ends with '{messages[-1]['role']}'")
        answers.append(messages[-1]["content"])
        contexts.append(_user_turns(messages[:-1]))
    if isinstance(row.get("prompt"), str):
        prompt = row["prompt"]
    elif isinstance(row.get("prompt"), list):
        prompt = _user_turns(row["prompt"])
    elif contexts[0] != contexts[1]:  # the implicit prompt must be the same conversation for both answers
        raise DataError(f"{where}: 'chosen' and 'rejected' have different user turns and there is no 'prompt'")
    else:
        prompt = contexts[0]
    if not prompt:
        raise DataError(f"{where}: missing field 'prompt' (no user turn in 'prompt' or before the answers)")
    return prompt, answers[0], answers[1]


def _user_turns(messages: list) -> str:
    # Our pairs are single-turn: several user turns are joined; system and earlier assistant turns are dropped.
    return "\n".join(m["content"] for m in messages if isinstance(m, dict) and m.get("role") == "user")


def _text(row: dict, name: str, where: str) -> str:
    if not isinstance(row[name], str):
        raise DataError(f"{where}: field '{name}' must be a string, got {type(row[name]).__name__}")
    return row[name]
