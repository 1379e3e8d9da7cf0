"""A unit's directory in the run directory: the stamps that say whose it is (unit.json, written when the unit
starts) and that it finished (done.json), the check that a finished unit's output is whole, and the move of a
directory another config left into stages/.stale/ (never a deletion: it may hold a finished model)."""

from __future__ import annotations

import json
from pathlib import Path

from safealign.config import dump_yaml
from safealign.errors import SafealignError
from safealign.io import atomic_write_json, atomic_write_text


def stamp_hash(path: Path) -> str | None:
    """The "hash" in done.json or unit.json; None when the file is missing or damaged (cut, not JSON)."""
    try:
        return json.loads(path.read_text()).get("hash")
    except (OSError, ValueError, AttributeError):
        return None


def done_hash(out_dir: Path) -> str | None:
    return stamp_hash(out_dir / "done.json")


def damage_in(out_dir: Path) -> str | None:
    """What is damaged in a finished unit's directory, or None: every JSON file must parse, every JSONL file end
    with a whole line, every safetensors file be covered by its header (the check safetensors makes on opening).
    Checkpoints are not part of a finished unit's output and are checked when a resume reads them."""
    from safetensors import safe_open  # lazy: plans are made by `--dry-run` and `--help`-fast commands too

    for path in sorted(out_dir.rglob("*")):
        if "checkpoints" in path.relative_to(out_dir).parts or not path.is_file():
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".jsonl" and path.stat().st_size:
                with open(path, "rb") as f:
                    f.seek(-1, 2)
                    if f.read(1) != b"\n":
                        return f"{path.relative_to(out_dir)} ends in a cut line"
            elif path.suffix == ".safetensors":
                with safe_open(str(path), "pt"):
                    pass
        except Exception as e:  # noqa: BLE001 -- any failure to read it is damage
            return f"{path.relative_to(out_dir)} is damaged ({str(e).splitlines()[0][:100]})"
    return None


def stale_hash(unit) -> str | None:
    """The hash of what another config left in the unit's directory (None when it is empty or this config's;
    "unknown" when its unit.json is missing or damaged): that directory is moved aside before the unit runs."""
    if not unit.out_dir.exists():
        return None
    old = stamp_hash(unit.out_dir / "unit.json") or "unknown"
    return None if old == unit.hash else old


def stale_dir(run_dir: Path, unit, old_hash: str) -> Path:
    return run_dir / "stages" / ".stale" / f"{unit.name.replace('/', '--')}-{old_hash}"


def prepare_dir(unit, run_dir: Path) -> None:
    """A unit directory left by another config is moved aside into stages/.stale/ (never deleted: it may hold a
    finished model); one left by this config (a killed run) is kept, so training resumes from its checkpoint."""
    old = stale_hash(unit)
    if old:
        stages = (run_dir / "stages").resolve()
        if not unit.out_dir.resolve().is_relative_to(stages):  # names are plain; this is the last guard
            raise SafealignError(f"{unit.out_dir} is outside {stages}: not moving it")
        dest = stale_dir(run_dir, unit, old)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # the same old config set aside before: keep both
            dest = dest.with_name(f"{dest.name}-{len(list(dest.parent.glob(dest.name + '*')))}")
        unit.out_dir.rename(dest)
        print(f"   {unit.out_dir} held hash {old}: moved to {dest}", flush=True)
    unit.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(unit.out_dir / "unit.json", {"hash": unit.hash, "name": unit.name})
    atomic_write_text(unit.out_dir / "config.yaml", dump_yaml(unit.config))
