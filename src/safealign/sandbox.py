"""Run model-written code against its unit tests, never in our own process.

Each run is a fresh `python -I` subprocess in its own session and a scratch directory that is deleted
afterwards, with
- a wall-clock limit (the process group is killed when it passes) and a CPU-time limit (RLIMIT_CPU);
- a memory limit (RLIMIT_AS) and a file-size limit (RLIMIT_FSIZE), no core dumps, set by the script's first
  lines before the code under test runs (not by a preexec hook, which is unsafe in a threaded parent);
- no network: in a new network namespace with no interfaces (`unshare -rn`) where the kernel allows it, and in
  any case with Python's socket constructors replaced by a function that raises;
- an empty environment but PATH, so no token or proxy setting reaches the code.
A test run that fails, times out, runs out of memory or touches the network counts as a failure; the caller
never sees an exception from the code under test.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

PREAMBLE = '''\
import resource as _resource
for _limit, _value in ((_resource.RLIMIT_CPU, {cpu_s}), (_resource.RLIMIT_AS, {memory_bytes}),
                       (_resource.RLIMIT_FSIZE, 2**20), (_resource.RLIMIT_CORE, 0)):
    _resource.setrlimit(_limit, (_value, _value))
import socket as _socket
def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the safealign sandbox")
_socket.socket = _socket.create_connection = _socket.socketpair = _socket.fromfd = _no_network
del _resource, _limit, _value, _socket, _no_network
'''


@dataclass
class RunResult:
    passed: bool
    reason: str  # "passed", "failed", "timeout", "memory", "error: ..."


@functools.lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """Whether `unshare -rn` can start a process here (unprivileged user + network namespaces)."""
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_tests(code: str, tests: str, timeout_s: float = 5.0, memory_mb: int = 512) -> RunResult:
    """Run `code` followed by `tests` (asserts) in the sandbox; passed when the process exits 0."""
    with tempfile.TemporaryDirectory(prefix="safealign-sandbox-") as scratch:
        script = Path(scratch) / "candidate.py"
        preamble = PREAMBLE.format(cpu_s=max(1, int(timeout_s)), memory_bytes=memory_mb * 2**20)
        script.write_text(preamble + "\n" + code + "\n\n" + tests + "\n", encoding="utf-8")
        command = [sys.executable, "-I", str(script)]
        if network_namespace_available():
            command = ["unshare", "-rn", *command]
        proc = subprocess.Popen(command, cwd=scratch, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # its own process group: a timeout kills all it started
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return RunResult(False, "timeout")
    if proc.returncode == 0:
        return RunResult(True, "passed")
    text = err.decode("utf-8", "replace")
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL) or "MemoryError" in text:
        return RunResult(False, "memory" if "MemoryError" in text else "timeout")
    if "AssertionError" in text:
        return RunResult(False, "failed")
    last = text.strip().splitlines()[-1] if text.strip() else f"exit status {proc.returncode}"
    return RunResult(False, f"error: {last[:200]}")
