"""Wall time and peak memory of a stage: GPU memory where there is a GPU, process RSS otherwise."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _reset_peak_rss() -> bool:
    """Writing 5 to clear_refs resets the kernel's peak-RSS mark (VmHWM) for this process (Linux >= 4.0)."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class StageMeter:
    """`with StageMeter() as m: ...` then m.result() -> {"wall_s", "peak_mem_mb", "peak_mem_kind"}."""

    def __enter__(self):
        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            self.rss_since_start = _reset_peak_rss()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.start
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated() / 2**20
            self.kind = "gpu_allocated"
        else:
            self.peak = _peak_rss_mb()
            self.kind = "rss" if self.rss_since_start else "rss_process_lifetime"
        return False

    def result(self) -> dict:
        return {"wall_s": round(self.wall, 2), "peak_mem_mb": round(self.peak, 1), "peak_mem_kind": self.kind}
