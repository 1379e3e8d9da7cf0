"""How a sandboxed run is walled in: an outer wrapper (a separate process tree) and the worker's own layers.

Wrappers, strongest first, the first that starts here is used:
- `bubblewrap`: a new mount, PID, network, IPC, UTS and user namespace; the root is a read-only view of /usr and
  the interpreter's own prefix only (no home, no /etc, no /tmp of ours), the scratch directory is the one
  writable place, every capability dropped, and the whole tree dies with it (`--die-with-parent`, PID 1 of its
  namespace);
- `unshare`: new user, network, PID and mount namespaces (no interface, the tree dies with its PID 1), but the
  file system as the caller sees it;
- `none`: a plain process in its own session, killed as a group.
Layers the worker puts on itself whatever the wrapper (sandbox/worker.py), each where the kernel has it:
- `landlock`: reads only under /usr and the interpreter's prefix, writes only in the scratch directory, no TCP,
  no abstract UNIX sockets, no signals outside the sandbox;
- `seccomp`: no socket of any family, no new process or program, no ptrace or reading other processes' memory,
  no kill, no namespaces, no io_uring;
- `rlimits`: CPU seconds, address space, file size (the captured stdout / stderr are files, so output is capped
  by the same limit), no core dumps, process count (ignored for root, which is why seccomp is the real limit).
File-system isolation is bubblewrap or Landlock; without either the worker refuses to run the code unless the
caller opted out (`filesystem="unisolated"`).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SCRATCH_INSIDE = "/scratch"  # where bubblewrap shows the scratch directory
WRAPPERS = ("bubblewrap", "unshare", "none")


@dataclass(frozen=True)
class Isolation:
    wrapper: str = "bubblewrap"
    landlock: bool = True
    seccomp: bool = True
    filesystem: str = "isolated"  # "isolated": refuse without bubblewrap or Landlock; "unisolated": run anyway


def interpreter() -> str:
    """The base interpreter (run with -I -S: standard library only, no virtual environment's packages)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def read_paths() -> list[str]:
    """What the code may read: the system's libraries and the interpreter's standard library, nothing else."""
    prefix = os.path.realpath(sys.base_prefix)
    paths = ["/usr", prefix, os.path.dirname(interpreter())]
    return list(dict.fromkeys(p for p in paths if os.path.exists(p)))


def _bubblewrap(scratch: str) -> list[str]:
    command = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv",
               "--setenv", "PATH", "/usr/bin:/bin", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged-/usr links, or real folders
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    for path in read_paths():
        if not path.startswith("/usr/"):
            command += ["--ro-bind", path, path]
    return command + ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", scratch, SCRATCH_INSIDE,
                      "--chdir", SCRATCH_INSIDE]


_UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount",
            "--mount-proc"]


def wrapper_command(wrapper: str, scratch: str) -> tuple[list[str], str]:
    """The command prefix and the scratch directory's path as the code sees it."""
    if wrapper == "bubblewrap":
        return _bubblewrap(scratch), SCRATCH_INSIDE
    if wrapper == "unshare":
        return list(_UNSHARE), scratch
    return [], scratch


@functools.lru_cache(maxsize=None)
def wrapper_works(wrapper: str) -> bool:
    """Whether this wrapper can start a process here (bubblewrap installed; unprivileged namespaces allowed)."""
    if wrapper == "none":
        return True
    if wrapper == "bubblewrap" and shutil.which("bwrap") is None:
        return False
    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    prefix, _ = wrapper_command(wrapper, str(scratch))
    try:
        return subprocess.run([*prefix, interpreter(), "-I", "-S", "-c", "pass"], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def strongest(filesystem: str = "isolated") -> Isolation:
    return Isolation(next(w for w in WRAPPERS if wrapper_works(w)), filesystem=filesystem)
