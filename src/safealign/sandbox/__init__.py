"""Run model-written code against its unit tests, never in our own process, and decide the verdict ourselves.

`run_tests(code, tests)` starts the worker (worker.py) inside the strongest wrapper that works here
(isolation.py), hands it the candidate and the non-literal parts of the tests on stdin, waits at most
`timeout_s` of wall-clock time, kills the whole tree and reads back values, from which verdict.py decides. The
worker's stdin, stdout, stderr and results are files in a directory of ours that the code cannot name, so output
is capped by the file-size limit and no descendant can hold a pipe open. A run that fails, times out, runs out of
memory, exits early, or touches what it may not counts as a failure; the caller never sees an exception from the
code under test. `RunResult.isolation` names what was in force ("bubblewrap+landlock-abi7+seccomp+rlimits").
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from safealign.config import one_of
from safealign.errors import ConfigError
from safealign.io import progress_kwargs
from safealign.sandbox.isolation import WRAPPERS, Isolation, interpreter, read_paths, strongest, wrapper_command
from safealign.sandbox.verdict import UnparsableTests, decide, plan

WORKER = (Path(__file__).parent / "worker.py").read_text(encoding="utf-8")
OUTPUT_LIMIT_BYTES = 2**20  # per captured stream and for files the code writes
FILESYSTEM_CHOICES = ("isolated", "unisolated")


class SandboxRefused(ConfigError):
    """No file-system isolation here and the caller did not opt out: no model-written code runs."""


@dataclass
class RunResult:
    passed: bool
    reason: str  # "passed", "failed: ...", "timeout", "memory", "output limit", "exited early", "error: ..."
    isolation: str = ""


def _run_worker(job: dict, isolation: Isolation, timeout_s: float) -> tuple[int | None, list[dict], str]:
    with tempfile.TemporaryDirectory(prefix="safealign-sandbox-") as tmp:
        scratch, io = Path(tmp) / "scratch", Path(tmp) / "io"
        scratch.mkdir()
        io.mkdir(mode=0o700)
        prefix, _ = wrapper_command(isolation.wrapper, str(scratch))
        job["limits"]["read_paths"] = read_paths()
        (io / "job").write_text(repr(job), encoding="utf-8")
        with open(io / "job", "rb") as stdin, open(io / "results", "wb") as stdout, \
                open(io / "stderr", "wb") as stderr:
            proc = subprocess.Popen([*prefix, interpreter(), "-I", "-S", "-c", WORKER], cwd=scratch,
                                    env={"PATH": "/usr/bin:/bin"}, stdin=stdin, stdout=stdout, stderr=stderr,
                                    start_new_session=True)  # its own group: a timeout kills all it started
            try:
                returncode = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                returncode = None
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # descendants left in the group (namespaces end the rest)
            except ProcessLookupError:
                pass
            proc.wait()
        lines = []
        for line in (io / "results").read_bytes()[:OUTPUT_LIMIT_BYTES].decode("utf-8", "replace").splitlines():
            try:
                row = ast.literal_eval(line)  # evaluates nothing: literals only, whatever the code wrote
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            if isinstance(row, dict):
                lines.append(row)
        err = (io / "stderr").read_bytes()[-2000:].decode("utf-8", "replace")
    return returncode, lines, err


def _reason(returncode, lines, jobs, checks) -> str:
    if returncode is None or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if returncode == -signal.SIGXFSZ:
        return "output limit"
    errors = [row["error"] for row in lines[1:] if isinstance(row.get("error"), str)]
    if errors:
        first = errors[0]
        if first.startswith("MemoryError"):
            return "memory"
        if first.startswith("AssertionError"):
            return "failed"
        return f"error: {first[:200]}"
    reported = {row["job"]: row for row in lines[1:] if isinstance(row.get("job"), int) and "error" not in row}
    if any(index not in reported for index in range(len(jobs))):
        return "exited early"
    values = {i: row["value"] for i, row in reported.items() if isinstance(row.get("value"), str)}
    return decide(checks, values) or "passed"


def run_tests(code: str, tests: str, timeout_s: float = 5.0, memory_mb: int = 512,
              isolation: Isolation | None = None) -> RunResult:
    """Run `code`, then `tests` (asserts), in the sandbox; passed only when every assert holds, judged here."""
    isolation = isolation or strongest()
    try:
        jobs, checks = plan(tests)
    except UnparsableTests as error:
        return RunResult(False, f"error: {error}")
    job = {"code": code, "jobs": jobs,
           "limits": {"cpu_s": max(1, int(timeout_s)), "memory_bytes": memory_mb * 2**20,
                      "file_bytes": OUTPUT_LIMIT_BYTES, "processes": 1, "landlock": isolation.landlock,
                      "seccomp": isolation.seccomp, "require_filesystem": isolation.filesystem == "isolated"
                      and isolation.wrapper != "bubblewrap"}}
    returncode, lines, err = _run_worker(job, isolation, timeout_s)
    head = lines[0] if lines else {}
    if "refused" in head:
        raise SandboxRefused(head["refused"])
    layers = head.get("isolation") if isinstance(head.get("isolation"), list) else []
    used = "+".join([isolation.wrapper, *layers])
    if not layers:  # the worker did not even start: our problem, not the candidate's
        last = err.strip().splitlines()[-1] if err.strip() else f"exit status {returncode}"
        return RunResult(False, f"error: the sandbox did not start: {last[:200]}", used)
    reason = _reason(returncode, lines, jobs, checks)
    return RunResult(reason == "passed", reason, used)


def prepare(filesystem: str = "isolated") -> Isolation:
    """The strongest isolation that works here, tried once on trivial code, so that a refusal comes before any
    generation (SandboxRefused: no file-system isolation and no opt-out)."""
    one_of(filesystem, FILESYSTEM_CHOICES, "sandbox filesystem")
    isolation = strongest(filesystem)
    trial = run_tests("def two():\n    return 2\n", "assert two() == 2", isolation=isolation)
    if not trial.passed:
        raise ConfigError(f"the sandbox does not run here ({isolation.wrapper}): {trial.reason}")
    return isolation


def run_many(pairs: list[tuple[str, str]], timeout_s: float = 5.0, memory_mb: int = 512,
             isolation: Isolation | None = None, workers: int | None = None) -> list[RunResult]:
    """`run_tests` over (code, tests) pairs, several at a time (each run is one process mostly waiting on itself)."""
    isolation = isolation or prepare()
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        runs = pool.map(lambda pair: run_tests(*pair, timeout_s, memory_mb, isolation), pairs)
        return list(tqdm(runs, total=len(pairs), desc="unit tests", **progress_kwargs()))


__all__ = ["FILESYSTEM_CHOICES", "WRAPPERS", "Isolation", "RunResult", "SandboxRefused", "prepare", "run_many",
           "run_tests"]
