"""Read rows from a hub id, a local file (.jsonl, .json, .parquet, .txt), a local directory (a saved HF dataset or
`{split}.jsonl|json|parquet|txt` files) with the same code ('mini:' paths arrive resolved by the pipeline).
Every row keeps where it came from so a bad row is reported as `file:line`. A .txt file is a plain-text corpus, one row `{"text": line}` per line
(blank lines kept, so row i is line i+1): WMDP's own code reads its cyber and retain corpus files line by line
as plain text; such a file reads here under a .txt name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safealign.errors import DataError
from safealign.io import looks_like_hub_id, read_json_records, read_jsonl

# datasets and pyarrow are imported inside the functions that use them: importing takes seconds that
# commands which never reach them (--dry-run, schema, config errors) should not wait for.

FILE_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")


@dataclass
class Rows:
    rows: list[dict]
    origin: str  # the file or dataset the rows came from
    lines: list[int] | None = None

    def where(self, i: int) -> str:
        if self.lines is not None:
            return f"{self.origin}:{self.lines[i]}"
        return f"{self.origin} record {i}"

    def __len__(self) -> int:
        return len(self.rows)


def read_prompts(path: str, split: str = "", num: int = 0) -> list[str]:
    """The distinct `prompt` strings of any rows file (pairs, PKU-SafeRLHF, BeaverTails, prompt/response
    files), in first-seen order; the first `num` of them (0 = all). A row without one is an error naming it."""
    rows = load_rows(path, split)
    prompts: dict[str, None] = {}
    for i, row in enumerate(rows.rows):
        if not isinstance(row.get("prompt"), str) or not row["prompt"]:
            raise DataError(f"{rows.where(i)}: field 'prompt' must be a non-empty string, got {row.get('prompt')!r}")
        prompts.setdefault(row["prompt"])
    if not prompts:
        raise DataError(f"{rows.origin}: no prompts (empty file)")
    return list(prompts)[: num or len(prompts)]


def load_rows(path: str, split: str) -> Rows:
    local = Path(path)
    if local.is_file():
        return _read_file(local)
    if local.is_dir():
        return _read_dir(local, split)
    if looks_like_hub_id(path):
        return _read_hub(path, split)
    raise DataError(f"data path does not exist: {path}")


def _read_file(path: Path) -> Rows:
    try:
        return _read_file_as(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None


def _read_file_as(path: Path) -> Rows:
    if path.suffix == ".jsonl":
        rows, lines = _read_jsonl_with_lines(path)
        return Rows(rows, str(path), lines=lines)
    if path.suffix == ".json":
        return Rows(read_json_records(path), str(path))
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return Rows(pq.read_table(path).to_pylist(), str(path))
    if path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        return Rows([{"text": line} for line in lines], str(path), lines=list(range(1, len(lines) + 1)))
    raise DataError(f"{path}: unsupported data file type (expected one of {', '.join(FILE_SUFFIXES)})")


def _read_jsonl_with_lines(path: Path) -> tuple[list[dict], list[int]]:
    rows = read_jsonl(path)
    lines = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                lines.append(lineno)
    return rows, lines


def _read_dir(path: Path, split: str) -> Rows:
    if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split '{split}' (have {', '.join(ds)})")
            ds = ds[split]
        return Rows(ds.to_list(), f"{path}[{split}]")
    for suffix in FILE_SUFFIXES:
        candidate = path / f"{split}{suffix}"
        if candidate.exists():
            return _read_file(candidate)
    have = sorted(p.name for p in path.iterdir() if p.suffix in FILE_SUFFIXES)
    raise DataError(f"{path}: no file for split '{split}' (looked for {split}.jsonl/.json/.parquet/.txt; "
                    f"have {', '.join(have) or 'none'})")


def _read_hub(hub_id: str, split: str) -> Rows:
    import datasets

    config, _, split_name = split.rpartition(":")  # "forget10:train": a dataset config (TOFU's subsets) and its split
    try:
        ds = datasets.load_dataset(hub_id, config or None, split=split_name)
    except Exception as e:  # offline, gated, missing: one line, not a traceback
        raise DataError(f"could not load dataset '{hub_id}' split '{split}' from the hub: {str(e).splitlines()[0]}") from None
    return Rows(ds.to_list(), f"{hub_id}[{split}]")
