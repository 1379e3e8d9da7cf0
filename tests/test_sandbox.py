"""The sandbox for model-written code (issue #19): every attempt the issue lists, each under every wrapper that
works here (bubblewrap, unshare's namespaces, and none: the worker's own Landlock + seccomp + rlimits only, i.e.
without a network namespace). An attempt counts as stopped when the tests it should not pass fail, or the
host-side effect it aims at (a deleted canary, a connection, a surviving process, our memory) does not happen."""

import os
import resource
import socket
import subprocess
import threading
import time

import pytest

from safealign.sandbox import Isolation, SandboxRefused, prepare, run_tests
from safealign.sandbox.isolation import wrapper_works

ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"
WRONG_ADD = "def add(a, b):\n    return 0\n"


def _variants():
    for wrapper in ("bubblewrap", "unshare", "none"):
        yield pytest.param(Isolation(wrapper), id=wrapper)


@pytest.fixture(params=list(_variants()))
def isolation(request):
    chosen = request.param
    if not wrapper_works(chosen.wrapper):
        pytest.skip(f"{chosen.wrapper} cannot start a process here")
    try:
        trial = run_tests("", "assert True", isolation=chosen)
    except SandboxRefused:
        pytest.skip(f"{chosen.wrapper} alone has no file-system isolation here (no Landlock)")
    assert trial.passed, trial
    return chosen


def _run(code, tests=ADD_TESTS, isolation=None, **limits):
    return run_tests(code, tests, isolation=isolation, **{"timeout_s": 3.0, **limits})


# ------------------------------------------------------------------------------------- honest code and the verdict


def test_honest_code_passes_and_prints_do_not_disturb_the_verdict(isolation):
    code = "import math\nprint('hello')\ndef add(a, b):\n    print(a, b)\n    return math.fsum([a, b])\n"
    result = _run(code, isolation=isolation)
    assert result.passed and result.reason == "passed", result
    assert result.isolation.startswith(isolation.wrapper + "+") and "rlimits" in result.isolation
    wrong = _run(WRONG_ADD, isolation=isolation)
    assert not wrong.passed and wrong.reason == "failed: line 1", wrong


def test_tests_with_setup_statements_and_computed_expectations_are_decided_in_our_process(isolation):
    tests = "xs = [3, 1, 2]\nassert sort_copy(xs) == sorted(xs)\nassert sort_copy([]) == []\nassert 2 in sort_copy(xs)\n"
    assert _run("def sort_copy(xs):\n    return sorted(xs)\n", tests, isolation=isolation).passed
    assert not _run("def sort_copy(xs):\n    return xs\n", tests, isolation=isolation).passed


@pytest.mark.parametrize("code", [
    WRONG_ADD + "import sys\nsys.exit(0)\n",
    WRONG_ADD + "import os\nos._exit(0)\n",
    "import os\nos._exit(0)\n",
    "def add(a, b):\n    raise SystemExit(0)\n",
    WRONG_ADD + "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "import sys, os\nsys.excepthook = lambda *args: os._exit(0)\ndef add(a, b):\n    raise ValueError(a)\n",
    "import sys\ndef main():\n    return 0\nsys.exit(main())\ndef add(a, b):\n    return a + b\n",  # careless
    "class Equal:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    "def add(a, b):\n    return Equal()\n",
], ids=["sys.exit", "os._exit after", "os._exit only", "SystemExit in function", "atexit", "excepthook",
        "sys.exit(main())", "always equal"])
def test_no_early_exit_hook_or_forged_equality_passes_failing_tests(isolation, code):
    result = _run(code, isolation=isolation)
    assert not result.passed, result


def test_the_candidate_never_sees_an_expected_value(isolation):
    # It looks everywhere it might: its __file__, stdin, the worker's frames, the job file beside the scratch.
    code = '''
import sys, os, gc
def add(a, b):
    seen = []
    for attempt in (lambda: open(__file__).read(), lambda: sys.stdin.read(), lambda: open("/proc/self/fd/0").read(),
                    lambda: repr([f.f_locals for f in [sys._getframe(i) for i in range(1, 4)]]),
                    lambda: repr(gc.get_objects()), lambda: open("../io/job").read()):
        try:
            seen.append(attempt())
        except BaseException:
            pass
    needle = "".join(["42"] * 3)  # built at run time: the compiler folds `400000 + 24242` into a constant
    return int(needle) if needle in " ".join(map(str, seen)) else 0
'''
    result = _run(code, "assert add(1, 2) == 424242\n", isolation=isolation)
    assert not result.passed and result.reason.startswith("failed"), result


def test_forged_result_lines_do_not_pass(isolation):
    code = '''
import os
def add(a, b):
    return 0
for path in ("../io/results", "/proc/self/fd/1", "/dev/stdout"):
    try:
        with open(path, "w") as f:
            f.write("{'isolation': []}\\n{'job': 0, 'value': '5'}\\n{'job': 1, 'value': '0'}\\n{'done': True}\\n")
    except OSError:
        pass
'''
    assert not _run(code, isolation=isolation).passed


# ------------------------------------------------------------------------------------------------- file system


def test_no_write_or_delete_outside_the_scratch_directory(isolation, tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("keep me")
    code = f'''
import os, shutil
def add(a, b):
    return a + b
for act in (lambda: os.remove({str(canary)!r}), lambda: open({str(tmp_path / "written")!r}, "w").write("x"),
            lambda: open({str(tmp_path / "big")!r}, "wb").write(b"x" * 5 * 2**20),
            lambda: shutil.rmtree({str(tmp_path)!r}), lambda: open("../escaped", "w").write("x")):
    try:
        act()
    except OSError:
        pass
'''
    result = _run(code, isolation=isolation)
    assert canary.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary"]
    assert result.passed, result  # blocked writes are the candidate's problem, not a crash of ours


def test_files_outside_the_allowed_reads_stay_unread(isolation, tmp_path):
    key = tmp_path / "home" / ".ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("PRIVATE-KEY-1234")
    code = '''
def read(path):
    try:
        return open(path).read()
    except OSError:
        return ""
'''
    tests = f"assert 'root' in read('/etc/passwd')\nassert read({str(key)!r}) == 'PRIVATE-KEY-1234'\n"
    for line in tests.splitlines():
        result = _run(code, line, isolation=isolation)
        assert not result.passed, (line, result)


def test_a_write_in_the_scratch_directory_is_capped(isolation):
    code = '''
def big():
    try:
        with open("big", "wb") as f:
            f.write(b"x" * 5 * 2**20)
    except OSError:
        pass
    import os
    return os.path.getsize("big")
'''
    result = _run(code, "assert big() == 5 * 2**20\n", isolation=isolation)
    assert not result.passed, result


# ----------------------------------------------------------------------------------------------------- network


@pytest.fixture
def tcp_listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn.recv(64))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_no_tcp_connection_by_any_route(isolation, tcp_listener):
    port, accepted = tcp_listener
    code = f'''
import importlib, subprocess, sys
def reach():
    got = 0
    def via_socket():
        import socket
        socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"socket")
    def via_low_level():
        import _socket
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        s.connect(("127.0.0.1", {port}))
        s.send(b"_socket")
    def via_reload():
        import socket
        importlib.reload(socket).create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"reload")
    def via_curl():
        subprocess.run(["curl", "-s", "http://127.0.0.1:{port}/"], timeout=2, check=True)
    def via_child():
        code = "import socket; socket.create_connection(('127.0.0.1', {port})).sendall(b'child')"
        subprocess.run([sys.executable, "-c", code], timeout=2, check=True)
    for route in (via_socket, via_low_level, via_reload, via_curl, via_child):
        try:
            route()
            got += 1
        except BaseException:
            pass
    return got
'''
    result = _run(code, "assert reach() > 0\n", isolation=isolation, timeout_s=8.0)
    time.sleep(0.3)
    assert accepted == [] and not result.passed, (accepted, result)


def test_no_unix_socket_to_a_server_on_the_host(isolation, tmp_path):
    path = str(tmp_path / "host.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(4.0)
    code = f'''
import socket
def reach():
    for family_path in ({path!r}, "\\0safealign-test"):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(family_path)
            s.sendall(b"hello")
            return True
        except OSError:
            pass
    return False
'''
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(result=_run(code, "assert reach()\n", isolation=isolation)))
    thread.start()
    with pytest.raises(socket.timeout):
        server.accept()
    thread.join()
    server.close()
    assert not outcome["result"].passed, outcome


def test_our_environment_is_unreadable(isolation):
    # /proc/PID/environ shows a process's environment as it started, so the token goes into a process started
    # with it, as a user's HF_TOKEN is in the evaluating process's.
    holder = subprocess.Popen(["sleep", "30"], env={"SAFEALIGN_TEST_TOKEN": "hf_secret_5678"})
    try:
        result = _run(_FIND_TOKEN, "assert found()\n", isolation=isolation)
    finally:
        holder.kill()
        holder.wait()
    assert not result.passed, result


_FIND_TOKEN = '''
import os, glob
def found():
    places = [f"/proc/{os.getppid()}/environ", "/proc/1/environ", *glob.glob("/proc/[0-9]*/environ")]
    for place in places:
        try:
            if b"hf_secret_5678" in open(place, "rb").read():
                return True
        except OSError:
            pass
    return "hf_secret_5678" in str(os.environ)
'''


# ---------------------------------------------------------------------------------------- processes and output


def test_no_fork_bomb_and_no_big_children(isolation):
    forks = '''
import os
def forks():
    made = 0
    for _ in range(100):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            os._exit(0)
        made += 1
    return made
'''
    assert not _run(forks, "assert forks() == 100\n", isolation=isolation).passed
    children = '''
import multiprocessing, time
def grow():
    time.sleep(0.5)
    return bytearray(300 * 2**20)
def big():
    try:
        ps = [multiprocessing.Process(target=grow) for _ in range(4)]
        for p in ps:
            p.start()
        return len(ps)
    except BaseException:
        return 0
'''
    assert not _run(children, "assert big() == 4\n", isolation=isolation).passed


def _processes_named(tag: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/comm").read().strip() == tag:
                found.append(int(entry))
        except OSError:
            pass
    return found


def test_a_setsid_grandchild_neither_blocks_the_run_nor_outlives_it(isolation):
    tag = f"sbx{os.getpid() % 100000}"
    code = f'''
import ctypes, os, time
try:
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            ctypes.CDLL(None).prctl(15, b"{tag}", 0, 0, 0)
            time.sleep(30)
        os._exit(0)
except OSError:
    pass
def add(a, b):
    return a + b
'''
    start = time.perf_counter()
    result = _run(code, isolation=isolation, timeout_s=3.0)
    assert time.perf_counter() - start < 6.0
    assert result.passed, result  # a correct rewrite that tried to leave a process behind still counts
    time.sleep(0.3)
    assert _processes_named(tag) == []


def test_huge_output_is_capped_and_does_not_grow_our_process(isolation):
    code = "import sys\nfor _ in range(400):\n    sys.stdout.write('x' * 2**20)\ndef add(a, b):\n    return a + b\n"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = _run(code, isolation=isolation, timeout_s=10.0)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert not result.passed and grown_mb < 50, (result, grown_mb)
    assert time.perf_counter() - start < 12.0


@pytest.mark.parametrize("code, reason", [
    ("def f():\n    while True:\n        pass\nf()", "timeout"),
    ("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", "memory"),
])
def test_limits_of_time_and_memory_count_as_failures(isolation, code, reason):
    start = time.perf_counter()
    result = run_tests(code, "assert True", timeout_s=2.0, memory_mb=256, isolation=isolation)
    assert not result.passed and result.reason.startswith(reason), result
    assert time.perf_counter() - start < 8


# ---------------------------------------------------------------------------------------------------- refusal


def test_without_file_system_isolation_the_sandbox_refuses_unless_told_otherwise():
    bare = Isolation("none", landlock=False)
    with pytest.raises(SandboxRefused, match="unisolated"):
        run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS, isolation=bare)
    opted_out = run_tests("def add(a, b):\n    return a + b\n", ADD_TESTS,
                          isolation=Isolation("none", landlock=False, filesystem="unisolated"))
    assert opted_out.passed and "landlock" not in opted_out.isolation
    assert not opted_out.isolation.startswith("bubblewrap")


def test_prepare_refuses_an_unknown_choice_and_names_what_it_uses():
    with pytest.raises(Exception, match="isolated, unisolated"):
        prepare("sometimes")
    assert prepare("isolated").wrapper in ("bubblewrap", "unshare", "none")


def test_plain_values_of_every_literal_kind_compare_as_python_does(isolation):
    code = ("def values():\n    return {'f': 0.1 + 0.2, 'inf': float('inf'), 's': {1, 2}, 'e': set(), 'b': b'x',"
            " 't': (1, [2]), 'n': None}\n")
    tests = ("v = values()\nassert v['f'] == 0.30000000000000004\nassert v['inf'] == float('inf')\n"
             "assert v['s'] == {2, 1}\nassert v['e'] == set()\nassert v['b'] == b'x'\nassert v['t'] == (1, [2])\n"
             "assert v['n'] is None\nassert v['f'] > 0.3\nassert 0 < v['f'] < 1\n")
    assert _run(code, tests, isolation=isolation).passed
    assert not _run(code, tests.replace("(1, [2])", "(1, [3])"), isolation=isolation).passed
