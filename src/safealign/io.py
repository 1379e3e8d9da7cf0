"""Atomic file writes and line-numbered JSON(L) reading, used for every run-directory artefact."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from safealign.errors import DataError


def progress_kwargs() -> dict:
    """tqdm settings: live bars on a terminal; in a log file (CI, --detach) a line every 30 s, not a flood."""
    if sys.stderr.isatty():
        return {"dynamic_ncols": True}
    return {"mininterval": 30.0, "ncols": 100}


def expand_path(text: str) -> str:
    """`~/x`, `$DATA/x` and `${DATA}/x` as the shell would expand them (a quoted override reaches us unexpanded).
    Only strings that start with `~` or `$` are touched: every config string passes through here on its way to
    becoming a path, prompts and system messages included."""
    if text.startswith(("~", "$")):
        return os.path.expandvars(os.path.expanduser(text))
    return text


def cache_root() -> Path:
    """Where built and fetched things are kept: the mini world, the real tier ($SAFEALIGN_CACHE, default
    ~/.cache/safealign)."""
    return Path(os.environ.get("SAFEALIGN_CACHE", Path.home() / ".cache" / "safealign"))


DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow", ".txt")


def looks_like_hub_id(path: str) -> bool:
    """`name` or `owner/name`, not a relative/home/absolute path and not a data file name: a path that is
    not on disk but has this shape is looked up on the hub (models and datasets alike)."""
    parts = path.split("/")
    return (len(parts) in (1, 2) and all(parts) and not path.startswith((".", "~", "/"))
            and not path.lower().endswith(DATA_FILE_SUFFIXES))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same directory and a rename, so a killed process
    leaves either the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one line. A last line cut by a kill (no newline) is removed first, or the new row would be glued
    onto it; until then `read_jsonl(..., allow_truncated_last=True)` skips it."""
    path = Path(path)
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # rare: read the file to find the last whole line
                f.seek(0)
                f.truncate(f.read().rfind(b"\n") + 1)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path, allow_truncated_last: bool = False) -> list[dict]:
    """Read a JSONL file; a malformed line is a DataError naming the file and the line number. With
    `allow_truncated_last`, a last line without its newline (a write cut by a kill) is dropped instead."""
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if allow_truncated_last and lineno == len(lines) and not line.endswith("\n"):
            break
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_json_records(path: str | Path) -> list[dict]:
    """Read a JSON file holding a list of objects (the Alpaca/Lisa `data/*.json` layout)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
    if isinstance(data, dict):  # {"train": [...]} or a single-split {"data": [...]} layout is not guessed at
        raise DataError(f"{path}: expected a JSON list of records, got an object with keys {sorted(data)[:5]}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}: record {i}: expected an object, got {type(row).__name__}")
    return data
