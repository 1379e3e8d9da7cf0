"""One run at a time per run directory: an exclusive `flock` on `run_dir/.lock`, held for the whole run and
released by the kernel when the process ends (a killed run leaves no stale lock). The file names the holder."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from safealign.errors import SafealignError

LOCK_FILE = ".lock"


@contextmanager
def run_lock(run_dir: Path):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise SafealignError(f"{run_dir} is in use by {holder}; wait for it to end or `safealign stop "
                                 f"{run_dir}`, or give this run another output_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"safealign pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def lock_holder(run_dir: Path) -> int | None:
    """The pid of the safealign process that holds the run directory's lock now, or None when none does."""
    lock = run_dir / LOCK_FILE
    if not lock.exists():
        return None
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            words = f.read().split()
            return int(words[2]) if len(words) > 2 and words[2].isdigit() else -1
        fcntl.flock(f, fcntl.LOCK_UN)
        return None
