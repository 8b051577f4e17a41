"""The code sandbox under attack: network, filesystem writes, the caller's environment, fork and memory
bombs, endless loops and output, signals aimed at the caller, processes left behind, and the limits.

Each test checks one property with a program that tries to break it, so each can fail. Programs run
under the host's interpreter with `-I -S` (stdlib only), as the code verifier runs them.
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from distill.verifiers import sandbox
from distill.verifiers.sandbox import (
    NAMESPACES_UNAVAILABLE,
    SCRATCH,
    UID_BASE,
    UID_SPAN,
    SandboxLimits,
    SandboxResult,
    run_sandboxed,
    sandbox_available,
)

ROOT = Path(__file__).resolve().parents[1]
UNAVAILABLE = sandbox_available()
# Only a host without namespaces skips; a sandbox that starts but fails its own checks fails the tests.
pytestmark = pytest.mark.skipif(bool(UNAVAILABLE and UNAVAILABLE.startswith(NAMESPACES_UNAVAILABLE)),
                                reason=f"no sandbox here: {UNAVAILABLE}")

SHORT = SandboxLimits(cpu_s=2, wall_s=4)


def run_py(code: str, *args: str, limits: SandboxLimits = SHORT, stdin: str = "", files=None) -> SandboxResult:
    res = run_sandboxed([sys.executable, "-I", "-S", "main.py", *args], files={"main.py": textwrap.dedent(code),
                                                                              **(files or {})},
                        stdin=stdin, limits=limits)
    assert res.error is None, res.error
    return res


# The sandbox uids this test's runs drew. The suite runs in several processes at once (scripts/test.sh), and
# another one's sandboxed programs (a pipeline's code verification) run under uids from the same range: a check
# for processes left behind looks at this test's own uids.
DRAWN: set[int] = set()


@pytest.fixture(autouse=True)
def _drawn_uids(monkeypatch):
    DRAWN.clear()
    draw = sandbox._pick_uid

    def recorded() -> int:
        DRAWN.add(uid := draw())
        return uid

    monkeypatch.setattr(sandbox, "_pick_uid", recorded)


def in_uid_range(uid: int) -> bool:
    return UID_BASE <= uid < UID_BASE + UID_SPAN


def sandbox_pids(uids: set[int] | None = None) -> list[int]:
    """Host processes running under one of `uids` (default: the sandbox uids this test drew)."""
    uids = DRAWN if uids is None else uids
    found = []
    for p in psutil.process_iter(["uids"]):
        if p.info["uids"] and p.info["uids"].real in uids:
            found.append(p.pid)
    return found


# --- a normal program works -----------------------------------------------------------------------------


def test_stdin_to_stdout_and_exit_code():
    res = run_py("""
        import sys
        data = sys.stdin.read()
        print(data.upper(), end="")
        print("to stderr", file=sys.stderr)
        sys.exit(3)
    """, stdin="hello\nworld\n")
    assert (res.returncode, res.stdout, res.stderr.strip()) == (3, "HELLO\nWORLD\n", "to stderr")
    assert not res.timed_out and not res.output_truncated and res.signal is None


def test_files_land_in_scratch_which_is_cwd_home_and_tmpdir():
    res = run_py("""
        import os
        print(os.getcwd(), os.environ["HOME"], os.environ["TMPDIR"])
        print(open("data/input.txt").read())
    """, files={"data/input.txt": b"payload"})
    assert res.stdout.split() == [SCRATCH, SCRATCH, SCRATCH, "payload"]


def test_result_is_flat():
    res = run_py("print(1)")
    assert all(v is None or isinstance(v, (str, int, float, bool)) for v in res.to_dict().values())


# --- network ------------------------------------------------------------------------------------------


def test_cannot_connect_to_host_loopback():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        res = run_py("""
            import socket, sys
            try:
                socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
                print("connected")
            except OSError as e:
                print("refused", e)
        """, str(port))
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert res.stdout.startswith("refused"), res.stdout


def test_no_outbound_network_or_dns():
    res = run_py("""
        import socket
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for what, call in [("dns", lambda: socket.getaddrinfo("example.com", 443)),
                           ("tcp", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2)),
                           ("udp", lambda: udp.sendto(b"x", ("8.8.8.8", 53)))]:
            try:
                call()
                print(what, "ok")
            except OSError:
                print(what, "failed")
        print(sorted(name for _, name in socket.if_nameindex()))
    """)
    assert res.stdout.splitlines() == ["dns failed", "tcp failed", "udp failed", "['lo']"]


# --- filesystem -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/tmp", "/", "/dev/shm", "/var/tmp", str(ROOT), os.path.expanduser("~root")])
def test_cannot_write_outside_scratch(target):
    marker = Path(target) / f"sandbox-probe-{os.getpid()}"
    res = run_py("""
        import sys
        try:
            with open(sys.argv[1], "w") as f:
                f.write("escaped")
            print("written")
        except OSError as e:
            print("denied", e.errno)
    """, str(marker))
    assert res.stdout.startswith("denied"), res.stdout
    assert not marker.exists()


def test_host_tmp_contents_are_hidden(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host data")
    secret.chmod(0o644)
    res = run_py("""
        import os, sys
        print(os.path.exists(sys.argv[1]), sorted(os.listdir("/tmp")))
    """, str(secret))
    # Only the scratch, and the first step of the interpreter's path when it lives under /tmp (a checkout
    # there): the sandbox rebuilds that path so python can run, and nothing else of the host's /tmp.
    exposed = {Path(os.path.realpath(p)).parts[2] for p in (sys.prefix, sys.base_prefix)
               if Path(os.path.realpath(p)).parts[1:2] == ("tmp",)}
    assert res.stdout.split(" ", 1)[0] == "False"
    assert ast.literal_eval(res.stdout.split(" ", 1)[1]) == sorted({"sandbox", *exposed})


def test_scratch_is_writable():
    res = run_py("""
        import os, tempfile
        with open("out.txt", "w") as f:
            f.write("x" * 1000)
        with tempfile.NamedTemporaryFile() as t:
            t.write(b"y")
        print(os.path.getsize("out.txt"))
    """)
    assert res.stdout.strip() == "1000"


def test_scratch_size_is_limited():
    res = run_py("""
        try:
            with open("big", "wb") as f:
                for _ in range(64):
                    f.write(b"z" * (1 << 20))
            print("filled")
        except OSError as e:
            print("full", e.errno)
    """, limits=SandboxLimits(cpu_s=2, wall_s=4, scratch_bytes=8 << 20, max_file_bytes=1 << 30))
    assert res.stdout.strip() == "full 28"  # ENOSPC


def test_file_size_limit():
    res = run_py("""
        import sys
        with open("ok", "wb") as f:
            f.write(b"a" * (512 << 10))
        print("small ok", flush=True)
        with open("big", "wb") as f:
            f.write(b"a" * (2 << 20))
        print("big ok")
    """, limits=SandboxLimits(cpu_s=2, wall_s=4, max_file_bytes=1 << 20))
    assert res.stdout.splitlines() == ["small ok"]
    assert res.returncode != 0 and "File too large" in res.stderr


# --- environment ----------------------------------------------------------------------------------------


def test_parent_environment_is_invisible(monkeypatch):
    monkeypatch.setenv("DISTILL_SANDBOX_SECRET", "hunter2-do-not-leak")
    res = run_py("""
        import glob, os
        print(sorted(os.environ))
        print(os.environ.get("DISTILL_SANDBOX_SECRET"))
        for path in ["/proc/1/environ", "/proc/self/environ", *glob.glob("/proc/[0-9]*/environ")]:
            try:
                print(path, open(path, "rb").read())
            except OSError as e:
                print(path, "unreadable", e.errno)
    """)
    assert res.stdout.splitlines()[:2] == ["['HOME', 'LANG', 'PATH', 'TMPDIR']", "None"]
    assert "hunter2" not in res.stdout + res.stderr


# --- resource bombs -------------------------------------------------------------------------------------


def test_fork_bomb_is_contained():
    start = time.monotonic()
    res = run_py("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """, limits=SandboxLimits(cpu_s=2, wall_s=2, max_procs=32))
    assert time.monotonic() - start < 2 + 3
    assert res.timed_out
    assert DRAWN or os.geteuid() != 0  # as root every run has a uid of its own
    assert sandbox_pids() == []  # the bomb's processes cannot leave its uid: none is left anywhere


def test_fork_bomb_hits_process_limit():
    res = run_py("""
        import os, time
        children = 0
        try:
            for _ in range(200):
                if os.fork() == 0:
                    time.sleep(5)
                    os._exit(0)
                children += 1
        except OSError as e:
            print("stopped at", children, e.errno)
    """, limits=SandboxLimits(cpu_s=2, wall_s=4, max_procs=16))
    words = res.stdout.split()
    assert words[:2] == ["stopped", "at"] and int(words[2]) < 16 and words[3] == "11"  # EAGAIN
    assert sandbox_pids() == []


def test_memory_bomb_fails_and_host_survives():
    res = run_py("""
        hoard = []
        while True:
            hoard.append(bytearray(32 << 20))
    """, limits=SandboxLimits(cpu_s=5, wall_s=8, memory_bytes=256 << 20))
    assert res.returncode != 0 and "MemoryError" in res.stderr
    assert psutil.Process().is_running()


def test_infinite_loop_hits_cpu_limit():
    start = time.monotonic()
    res = run_py("while True: pass", limits=SandboxLimits(cpu_s=1, wall_s=10))
    assert res.timed_out and res.signal == signal.SIGXCPU
    assert time.monotonic() - start < 1 + 3


def test_sleeping_program_hits_wall_limit():
    start = time.monotonic()
    res = run_py("import time; time.sleep(60)", limits=SandboxLimits(cpu_s=10, wall_s=1))
    assert res.timed_out and res.returncode is None and res.signal == signal.SIGKILL
    assert time.monotonic() - start < 1 + 2
    assert sandbox_pids() == []


def test_huge_output_is_truncated_and_killed():
    cap = 64 << 10
    start = time.monotonic()
    res = run_py("""
        import sys
        while True:
            sys.stdout.write("x" * 8192)
    """, limits=SandboxLimits(cpu_s=10, wall_s=10, max_output_bytes=cap))
    assert res.output_truncated and res.signal == signal.SIGKILL
    assert len(res.stdout.encode()) + len(res.stderr.encode()) == cap
    assert time.monotonic() - start < 2


# --- the caller is out of reach -------------------------------------------------------------------------


def test_cannot_signal_parent_or_host_processes():
    received = []
    old = signal.signal(signal.SIGUSR1, lambda *_: received.append(1))
    canary = subprocess.Popen(["sleep", "60"])
    try:
        res = run_py("""
            import os, signal, sys
            canary, test = int(sys.argv[1]), int(sys.argv[2])
            for what, pid, sig in [("parent", os.getppid(), signal.SIGKILL), ("init", 1, signal.SIGKILL),
                                   ("canary", canary, signal.SIGKILL), ("test", test, signal.SIGUSR1),
                                   ("everyone", -1, signal.SIGKILL)]:
                try:
                    os.kill(pid, sig)
                    print(what, "sent")
                except OSError as e:
                    print(what, "failed", e.errno)
        """, str(canary.pid), str(os.getpid()))
        time.sleep(0.2)
        assert canary.poll() is None, "the sandbox killed a host process"
        assert received == []
        out = dict(line.split(" ", 1) for line in res.stdout.splitlines())
        # kill(-1) reaches only the sandbox's own processes; the others must be refused or not found.
        assert all(out[w].startswith("failed") for w in ("parent", "init", "canary", "test")), res.stdout
    finally:
        canary.kill()
        canary.wait()
        signal.signal(signal.SIGUSR1, old)


def test_runs_as_unprivileged_uid_without_capabilities():
    res = run_py("""
        import os
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(os.getuid(), os.getgid(), os.getgroups(), status["CapEff"].strip(), status["CapBnd"].strip(),
              status["NoNewPrivs"].strip())
    """)
    uid, gid, groups, eff, bnd, nnp = res.stdout.split()
    if os.geteuid() == 0:
        assert in_uid_range(int(uid)) and gid == uid and groups == "[]"
    assert int(eff, 16) == 0 and int(bnd, 16) == 0 and nnp == "1"


def test_no_process_outlives_the_run():
    start = time.monotonic()
    res = run_py("""
        import os
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.execvp("sleep", ["sleep", "1234.5"])
            os._exit(0)
        os.wait()
        print("daemon started")
    """, limits=SandboxLimits(cpu_s=2, wall_s=10))
    assert res.stdout.strip() == "daemon started" and res.returncode == 0
    assert time.monotonic() - start < 3  # the run did not wait for the daemon
    assert sandbox_pids() == []
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", "1234.5"]]


def test_host_temp_dir_is_removed(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run_py("print(1)")
    assert list(tmp_path.iterdir()) == []


# --- failures of the sandbox itself ---------------------------------------------------------------------


def test_missing_program_is_an_infra_error():
    res = run_sandboxed(["no-such-program-xyz"])
    assert res.error and "no-such-program-xyz" in res.error


def test_a_launcher_that_cannot_start_is_an_error_not_an_unsandboxed_run(monkeypatch):
    import distill.verifiers.sandbox as sandbox

    monkeypatch.setattr(sandbox, "_zygote", None)
    monkeypatch.setattr(sandbox, "_ZYGOTE", "import os; os._exit(3)")
    res = sandbox.run_sandboxed([sys.executable, "-I", "-S", "-c", "print('ran')"])
    assert res.error.startswith("the sandbox launcher failed") and res.stdout == "" and res.returncode is None
    monkeypatch.undo()  # the next test gets a working launcher again
    sandbox._zygote = None


def test_namespace_refusal_reads_as_unavailable(monkeypatch):
    import distill.verifiers.sandbox as sandbox

    monkeypatch.setattr(sandbox, "_namespace_flags", lambda root: 1 << 31)  # no such namespace: EINVAL
    res = sandbox.run_sandboxed([sys.executable, "-I", "-S", "-c", "print('ran')"])
    assert res.error.startswith(NAMESPACES_UNAVAILABLE) and "Invalid argument" in res.error
    assert res.stdout == "" and res.returncode is None


def test_a_dead_launcher_is_replaced():
    import distill.verifiers.sandbox as sandbox

    assert run_py("print(1)").stdout == "1\n"
    sandbox._zygote.proc.kill()
    sandbox._zygote.proc.wait()
    assert run_py("print(2)").stdout == "2\n"


def test_a_forked_caller_gets_its_own_launcher():
    # Spark forks its Python workers from a daemon: a child must not talk to its parent's launcher.
    import distill.verifiers.sandbox as sandbox

    assert run_py("print(1)").stdout == "1\n"
    parent_launcher = sandbox._zygote.proc.pid
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            res = run_py("print(3)")
            os.write(w, f"{res.stdout.strip()} {sandbox._zygote.proc.pid}".encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out, launcher = os.read(r, 100).decode().split()
    os.close(r)
    assert out == "3" and int(launcher) != parent_launcher


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"), reason="needs root to drop to nobody")
def test_non_root_fallback_still_isolates():
    """As an unprivileged user the sandbox adds a user namespace; it must isolate or refuse, never run bare."""
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, "lib")
        from distill.verifiers.sandbox import run_sandboxed
        prog = (
            "import os, socket\\n"
            "try:\\n    open('/probe-nonroot', 'w'); print('written')\\nexcept OSError: print('ro')\\n"
            "try:\\n    socket.create_connection(('127.0.0.1', 1), timeout=1)\\nexcept OSError as e: print(e.errno)\\n"
            "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\\n"
        )
        res = run_sandboxed([sys.executable, "-I", "-S", "-c", prog])
        print(f"ERROR {res.error}" if res.error else res.stdout, end="")
    """)
    out = subprocess.run(["/usr/bin/python3", "-I", "-c", code], cwd=ROOT, capture_output=True, text=True,
                         user=65534, group=65534, extra_groups=[], timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    if out.stdout.startswith(f"ERROR {NAMESPACES_UNAVAILABLE}"):
        pytest.skip(f"user namespaces are not available to unprivileged users here: {out.stdout}")
    assert out.stdout.split() == ["ro", "101", "0000000000000000"]


@pytest.mark.slow
def test_sandbox_ends_by_itself_when_the_caller_dies(tmp_path):
    """The parent enforces the wall limit; if it is killed mid-run, the launcher's own alarm ends the namespace."""
    code = textwrap.dedent("""
        import sys
        from distill.verifiers.sandbox import SandboxLimits, run_sandboxed
        sleeper = [sys.executable, "-I", "-S", "-c", "import time; time.sleep(600)"]
        run_sandboxed(sleeper, limits=SandboxLimits(wall_s=1))
    """)
    # A killed caller cannot remove its host-side temp dir: keep it in tmp_path.
    caller = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path)})

    def drawn_by_caller() -> set[int]:  # the uid the caller drew, seen on its sandboxed program
        uids = set()
        for p in psutil.Process(caller.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):  # gone meanwhile
                if in_uid_range(uid := p.uids().real):
                    uids.add(uid)
        return uids

    deadline = time.monotonic() + 10
    while not (uids := drawn_by_caller()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uids, "the sandboxed program never started"
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 1 + 5 + 3
    while sandbox_pids(uids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_pids(uids) == []


def test_python_reached_through_a_symlinked_environment_runs_in_the_sandbox(tmp_path):
    """A .venv that is a symlink to another one: the sandbox shows only the interpreter's real trees, so the
    program must be started by the interpreter's real path (it was not: every code run failed)."""
    (tmp_path / ".venv").symlink_to(sys.prefix)
    linked = tmp_path / ".venv" / "bin" / "python"
    assert linked.exists()
    probe = ("from distill.verifiers.code import CodeVerifier\n"
             "from distill.verifiers.sandbox import run_sandboxed\n"
             "res = run_sandboxed([*CodeVerifier().python, '-c', 'print(6 * 7)'])\n"
             "print(res.error, res.returncode, res.stdout.strip())")
    done = subprocess.run([str(linked), "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "lib")})
    assert done.stdout.strip() == "None 0 42", done.stderr[-2000:]
