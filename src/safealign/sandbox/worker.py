"""The process that runs model-written code: started by sandbox/__init__.py as `python -I -S -c <this file>`.

Standard library only, and few of its modules: every import is paid on each of hundreds of runs (json and
ctypes.util alone doubled a run's start-up), so the job comes in and the results go out as Python literals (the
job is ours, read with `eval` before any candidate code exists; the parent reads the results with
`ast.literal_eval`, which runs nothing). Nothing here is trusted with the verdict: the worker locks itself in,
runs the candidate, evaluates the test expressions it was sent (never the expected values, which stay with the
parent) and writes their reprs, one literal dict a line, to the results file; the parent compares them
(sandbox/verdict.py).

Order matters: the job is read and stdin closed, the results file is moved off fd 1 (the candidate's prints go
to stderr), the limits, Landlock and seccomp go on, and the isolation actually in force is written out, all before
one line of the candidate runs.
"""

import builtins
import ctypes
import os
import resource
import sys

# ---------------------------------------------------------------------------------------- Landlock (Linux >= 5.13)
# Kernel ABI constants from <linux/landlock.h>; an allow-list of paths, enforced on this process and its children.
_SYS_LANDLOCK = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_READ_RIGHTS = 1 | 4 | 8  # EXECUTE, READ_FILE, READ_DIR
_NET_BIND_CONNECT_TCP = 3  # ABI >= 4
_SCOPE_ABSTRACT_UNIX_AND_SIGNAL = 3  # ABI >= 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(libc, read_paths, write_paths):
    numbers = _SYS_LANDLOCK.get(os.uname().machine)
    if numbers is None:
        return None
    create, add_rule, restrict = numbers
    abi = libc.syscall(create, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return None
    fs_rights = _FS_RIGHTS_BY_ABI.get(abi, (1 << 16) - 1)
    attr = _RulesetAttr(fs_rights, _NET_BIND_CONNECT_TCP if abi >= 4 else 0,
                        _SCOPE_ABSTRACT_UNIX_AND_SIGNAL if abi >= 6 else 0)
    size = ctypes.sizeof(attr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = libc.syscall(create, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return None
    for paths, rights in ((read_paths, _READ_RIGHTS), (write_paths, fs_rights)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            rule_rights = rights if os.path.isdir(path) else rights & ((1 << 3) - 1 | (1 << 14))  # file-only rights
            if libc.syscall(add_rule, ruleset, 1, ctypes.byref(_PathBeneathAttr(rule_rights, fd)), 0) != 0:
                os.close(fd)
                os.close(ruleset)
                return None
            os.close(fd)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.syscall(restrict, ruleset, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        os.close(ruleset)
        return None
    os.close(ruleset)
    return f"landlock-abi{abi}"


# --------------------------------------------------------------------------------------------- seccomp (libseccomp)
# Denied with EPERM: every way to a socket, a new process or program, another process's memory or signals, a new
# namespace, and io_uring (whose operations seccomp cannot see).
_DENIED_SYSCALLS = ("socket", "socketpair", "fork", "vfork", "clone", "clone3", "execve", "execveat", "ptrace",
                    "process_vm_readv", "process_vm_writev", "kill", "pidfd_open", "pidfd_getfd",
                    "pidfd_send_signal", "rt_sigqueueinfo", "unshare", "setns", "mount", "umount2", "chroot",
                    "pivot_root", "bpf", "userfaultfd", "io_uring_setup", "keyctl", "add_key", "request_key",
                    "personality", "perf_event_open")


def _seccomp():
    for name in ("libseccomp.so.2", "libseccomp.so"):  # the soname; ctypes.util.find_library costs a subprocess
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    context = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW by default; other architectures' ABIs are killed
    if not context:
        return None
    deny = 0x00050000 | 1  # SCMP_ACT_ERRNO(EPERM)
    for syscall in _DENIED_SYSCALLS:
        number = lib.seccomp_syscall_resolve_name(syscall.encode())
        if number != -1:  # -1: no such call on this architecture (aarch64 has no fork)
            lib.seccomp_rule_add(context, deny, number, 0)
    return "seccomp" if lib.seccomp_load(context) == 0 else None


# ----------------------------------------------------------------------------------------------------- the run
def _lock_in(limits, scratch):
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"]))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"], limits["processes"]))  # root is exempt
    layers = ["rlimits"]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    if limits["landlock"]:
        layers.append(_landlock(libc, limits["read_paths"], [scratch, "/dev/null"]))
    if limits["seccomp"]:
        layers.append(_seccomp())
    return [layer for layer in layers if layer]


def main():
    job = eval(sys.stdin.read(), {"__builtins__": {}})  # our own repr of plain values, read before any candidate
    sys.stdin.close()
    os.close(0)
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the candidate's prints go to stderr, not into the results

    def report(**fields):
        results.write(repr(fields) + "\n")

    layers = _lock_in(job["limits"], os.getcwd())
    if job["limits"].get("require_filesystem") and not any(layer.startswith("landlock") for layer in layers):
        report(refused="no file-system isolation here (install bubblewrap, or use a kernel with Landlock), "
                       "or set sandbox_filesystem: unisolated to run model-written code without it")
        results.flush()
        os._exit(0)
    report(isolation=layers)
    namespace = {"__name__": "candidate", "__builtins__": builtins}  # a main guard does not run
    step = "candidate"
    try:
        exec(compile(job["code"], "<candidate>", "exec"), namespace)
        for index, (kind, source) in enumerate(job["jobs"]):
            step = index
            if kind == "exec":
                exec(compile(source, f"<test {index}>", "exec"), namespace)
                report(job=index)
            else:
                value = eval(compile(source, f"<test {index}>", "eval"), namespace)
                report(job=index, value=repr(value))
    except MemoryError:
        report(job=step, error="MemoryError")
    except BaseException as error:  # SystemExit included: an early exit of any kind is a failure
        report(job=step, error=f"{type(error).__name__}: {error}"[:300])
    else:
        report(done=True)
    results.flush()
    os._exit(0)


main()
