"""Run untrusted programs (model-written solutions) in throw-away Linux namespaces.

What a run guarantees, on Linux, when the caller is root:
  - no network: a fresh network namespace holds only a loopback device that is down;
  - the host filesystem is read-only: every mount is remounted read-only (and nosuid) in a private mount
    namespace, and /tmp, /var/tmp, /dev/shm and /run are covered by empty read-only tmpfs mounts, so host
    temporary files, shared memory and daemon sockets there are out of sight. The only writable place is
    `SCRATCH`, a size-limited tmpfs that is the working directory, $HOME and $TMPDIR, and that vanishes
    with the run;
  - none of the caller's environment: the program gets PATH, HOME, TMPDIR and LANG=C.UTF-8, nothing else;
  - limits: CPU seconds, address space, processes, file size, open files, no core dumps (rlimits), wall
    time and output size (the parent kills the whole sandbox past either);
  - it cannot signal or trace the caller: it lives in its own pid namespace, under an unprivileged uid/gid
    picked at random per run from UID_BASE + [0, UID_SPAN) (so concurrent runs do not share a process
    count), with no supplementary groups, no capabilities, an empty bounding set and no_new_privs;
  - nothing outlives the run: a small launcher is pid 1 of the namespace and the program its child; when
    the launcher ends, the kernel kills everything left in the namespace, and the parent only returns
    once the launcher is gone. Should the parent die first, the launcher's own alarm (wall limit + 5 s)
    ends the namespace;
  - nothing is shared between runs: each run has namespaces (network, pid, mount, IPC, UTS), a scratch
    tmpfs and a uid of its own. The files go to the launcher in memory; nothing is written on the host.

How a run starts: each calling process has a fork server, the zygote (`_ZYGOTE`), started on its first
run. The zygote always holds one spare run made ahead of time, with its namespaces made and every mount
already read-only; a run takes the spare and the zygote makes the next one while the run goes on. That
keeps Python's start-up, namespace creation and the remounts off each run's path (bench/bench_sandbox.py).

What it does not guarantee:
  - it is not a defence against kernel exploits: it shares the host kernel (no seccomp filter, no VM);
  - host files readable by "other" stay readable (except under the covered directories above);
    directories on the interpreter's path that "other" cannot enter (e.g. /root for a pyenv Python) are
    replaced by a read-only tmpfs that shows only the interpreter's tree;
  - world-writable Unix sockets outside the covered directories stay connectable (a read-only mount
    does not stop connect());
  - RLIMIT_CPU counts per process (in whole seconds), so a program that forks can spend up to
    max_procs x cpu_s within the wall limit. Memory is bounded per process by RLIMIT_AS, not per sandbox
    (up to max_procs x memory_bytes), and the scratch tmpfs adds up to scratch_bytes of RAM: there is no
    cgroup;
  - the uid is random, not reserved: two runs drawing the same uid at once (odds about n^2 / 2^25 for n
    concurrent runs) would share a process count;
  - it needs Linux; where namespaces cannot be created, the run returns a result with `error` set (starting
    with NAMESPACES_UNAVAILABLE) and never runs the program unsandboxed.

When the caller is not root, a user namespace is added (as `unshare --user --map-root-user` does): the program
runs as the caller's own uid (mapped to root inside, with every capability dropped) since only one uid
is mapped, so files the caller owns stay readable; RLIMIT_NPROC then binds (the uid is unprivileged)
and, on Linux >= 5.14, counts only the processes of the run's user namespace.
"""

from __future__ import annotations

import marshal
import math
import os
import resource
import secrets
import select
import selectors
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

UID_BASE = 2_000_000_000  # well above the subuid ranges that rootless containers usually get
UID_SPAN = 1 << 24
SCRATCH = "/tmp/sandbox"  # inside the sandbox: the writable tmpfs, cwd, $HOME and $TMPDIR
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
COVERED = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/var/run")  # hidden behind empty read-only tmpfs
# Remount failures on these are tolerated: they hold no host data a program could change.
PSEUDO_FS = ("proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs", "securityfs",
             "pstore", "bpf", "configfs", "fusectl", "hugetlbfs", "binfmt_misc", "autofs", "efivarfs",
             "rpc_pipefs", "nsfs")
MUST_BE_READ_ONLY = ("/", "/tmp", "/var/tmp", "/dev/shm", "/home", "/root")

# clone(2) flags, as <sched.h> defines them (os.unshare and its constants arrive only in Python 3.12)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000

NAMESPACES_UNAVAILABLE = "cannot create namespaces here"  # errors that start so mean: no sandbox on this host


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: float = 10.0
    wall_s: float = 15.0
    memory_bytes: int = 1 << 30
    max_procs: int = 64
    max_file_bytes: int = 16 << 20
    max_output_bytes: int = 1 << 20  # stdout and stderr together
    scratch_bytes: int = 64 << 20
    max_open_files: int = 256
    stack_bytes: int = 64 << 20  # deep recursion is common in contest solutions; 8 MiB is a poor default


@dataclass
class SandboxResult:
    """One sandboxed run; flat on purpose (plain str/int/float/bool fields) so it maps to a Spark struct."""

    returncode: int | None  # exit status when the program exited; None when a signal ended it
    stdout: str
    stderr: str
    timed_out: bool  # the wall limit or the CPU limit ended it
    output_truncated: bool  # it wrote more than max_output_bytes and was killed
    signal: int | None  # the signal that ended it (SIGKILL when the parent killed it)
    wall_s: float
    cpu_s: float | None  # user + system seconds of the program, when it ended on its own
    error: str | None = None  # the sandbox itself failed: the program's outcome means nothing

    def to_dict(self) -> dict:
        return asdict(self)


# The sandbox's fork server: one per calling process, started on first use, running outside any namespace
# as the caller, under the host's interpreter with `-I -S`. It always holds one spare run, made ahead of
# time: a runner that has made fresh namespaces, and their pid 1, the launcher, with the host filesystem
# already covered and remounted read-only. A request goes to the spare, which only mounts its scratch
# tmpfs, writes the files and forks the program; the zygote then makes the next spare while this run goes
# on. Python's start-up, the namespaces and the mounts are thus off the run's path: they were most of the
# sandbox's cost. Every run still gets namespaces, a scratch and a uid of its own, used by nothing else.
# `g` holds what is the same for every run (namespaces, covered and exposed directories); each request
# brings the run's own config `c`: files, argv, uid, limits.
_ZYGOTE = r"""
import _signal as signal, ctypes, marshal, os, resource, socket, sys

g = marshal.loads(bytes.fromhex(sys.argv[2]))
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
libc.unshare.argtypes = (ctypes.c_int,)
RDONLY, NOSUID, NODEV, NOEXEC, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
CLONE_NEWUSER = 0x10000000
c = sfd = None  # the run's config and status fd, once its request has come


def say(line):
    os.write(sfd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))


def check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), "mount " + dst)


def unescape(s):
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def prepare():
    # What every run needs, done before its request: this pid namespace's /proc, the covered and exposed
    # directories, the scratch mount point, and every mount read-only.
    mount("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC)
    # Opened before anything is covered: the bind sources may lie under a covered directory.
    sources = [(parent, child, os.open(os.path.join(parent, child), os.O_PATH)) for parent, child in g["expose"]]
    covered = set()
    for d in g["cover"]:
        mount("tmpfs", d, "tmpfs", NOSUID | NODEV | NOEXEC, "size=64k,nr_inodes=256,mode=755")
        covered.add(d)
    for parent, child, fd in sources:
        if parent not in covered:
            mount("tmpfs", parent, "tmpfs", NOSUID | NODEV, "size=64k,nr_inodes=256,mode=755")
            covered.add(parent)
        dst = os.path.join(parent, child)
        src = "/proc/self/fd/%d" % fd
        if os.path.isdir(src):
            os.makedirs(dst, exist_ok=True)
        else:
            open(dst, "ab").close()
        mount(src, dst, None, BIND | REC)
        os.close(fd)
    os.makedirs(g["scratch"], exist_ok=True)
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    problems = []
    for m in mounts:
        point, opts, fstype = unescape(m[4]), m[5].split(","), m[m.index("-") + 1]
        # Flags already on a mount must be passed again (in a user namespace they are locked).
        flags = REMOUNT | BIND | RDONLY | NOSUID | (NODEV if "nodev" in opts else 0)
        flags |= NOEXEC if "noexec" in opts else 0
        try:
            mount(None, point, None, flags)
        except OSError as e:
            if e.errno not in (2, 20) and fstype not in g["pseudo"]:
                problems.append(str(e))
    for m in mounts:
        point, fstype = unescape(m[4]), m[m.index("-") + 1]
        if fstype not in g["pseudo"]:
            try:
                if not os.statvfs(point).f_flag & os.ST_RDONLY:
                    problems.append("still writable: " + point)
            except OSError:
                pass
    for point in g["must_ro"]:
        if os.path.exists(point) and not os.statvfs(point).f_flag & os.ST_RDONLY:
            problems.append("still writable: " + point)
    if problems:
        raise OSError("; ".join(sorted(set(problems))))


def scratch():
    # The run's own writable place, mounted over the read-only mount point, owned by the run's uid.
    path, uid = g["scratch"], c["uid"]
    owner = ",uid=%d,gid=%d" % (uid, uid) if uid is not None else ""
    mount("tmpfs", path, "tmpfs", NOSUID | NODEV, "size=%d,nr_inodes=16384,mode=700%s" % (c["scratch_bytes"], owner))
    for name, data in c["files"]:
        path = os.path.join(g["scratch"], name)
        parent = os.path.dirname(path)
        if parent != g["scratch"]:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o700)
        if uid is not None:
            while path != g["scratch"]:
                os.chown(path, uid, uid)
                path = os.path.dirname(path)


class Caps(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def program():
    os.close(sfd)
    for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)
    cap = 0
    while libc.prctl(24, cap, 0, 0, 0) == 0:  # PR_CAPBSET_DROP until EINVAL past the last capability
        cap += 1
    check(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")  # PR_SET_NO_NEW_PRIVS
    uid = c["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    check(libc.capset(ctypes.byref(CapHeader(0x20080522, 0)), (Caps * 2)()), "capset")
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    os.chdir(g["scratch"])
    for res, soft, hard in c["rlimits"]:
        resource.setrlimit(res, (soft, hard))
    os.execvpe(c["argv"][0], c["argv"], c["env"])


def backstop(*_):
    os._exit(124)


def receive(sock, nfds):
    # One message: an 8-byte length with the fds, then the marshalled config. None when the sender is gone.
    head, fds = b"", []
    while len(head) < 8:
        chunk, got, _, _ = socket.recv_fds(sock, 8 - len(head), nfds)
        if not chunk:
            return None, fds
        head, fds = head + chunk, fds + got
    n, body = int.from_bytes(head, "little"), b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        if not chunk:
            return None, fds
        body += chunk
    return body, fds


def send(sock, body, fds):
    socket.send_fds(sock, [len(body).to_bytes(8, "little")], fds)
    sock.sendall(body)


def use_fds(fds):
    # The run's stdin, stdout and stderr become 0, 1 and 2; its status pipe stays private (close-on-exec).
    global sfd
    stdin, stdout, stderr, sfd = fds
    os.set_inheritable(sfd, False)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)


def launcher(sock):
    # pid 1 of the run's pid namespace: when it ends, the kernel kills everything left in the namespace.
    global c
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: the runner's death ends the run too
    failure = None
    try:
        prepare()
    except BaseException as e:
        failure = "E sandbox setup failed: %s" % e
    body, fds = receive(sock, 4)
    if body is None:
        os._exit(0)  # never used: the zygote is gone
    # The parent enforces the wall limit; this alarm ends the namespace even if the parent died.
    c = marshal.loads(body)
    signal.signal(signal.SIGALRM, backstop)
    signal.alarm(c["backstop_s"])
    use_fds(fds)
    if failure:
        say(failure)
        os._exit(125)
    try:
        scratch()
    except BaseException as e:
        say("E sandbox setup failed: %s" % e)
        os._exit(125)
    err_r, err_w = os.pipe()
    say("R")
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            program()
        except BaseException as e:
            os.write(err_w, ("%s: %s" % (type(e).__name__, e)).encode("utf-8", "replace"))
        os._exit(127)
    os.close(err_w)
    failure = os.read(err_r, 4096)
    if failure:
        say("X " + failure.decode("utf-8", "replace"))
    while True:
        try:
            got, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            os._exit(125)
        if got == pid:
            break
    say("S %d %.3f" % (status, usage.ru_utime + usage.ru_stime))
    os._exit(0)


def runner(sock):
    # Between the zygote and the run: makes the run's namespaces, forks their pid 1 and, once the request
    # comes, hands it on and waits for pid 1. Its exit closes the last writer of the status pipe, which
    # tells the parent the namespace is empty. A failure waits for the request too: it is reported there.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    failure = None
    try:
        uid, gid = os.getuid(), os.getgid()
        check(libc.unshare(g["flags"]), "unshare")
        if g["flags"] & CLONE_NEWUSER:  # as `unshare --map-root-user`: the caller's uid is root inside
            for name, text in (("setgroups", "deny"), ("uid_map", "0 %d 1" % uid), ("gid_map", "0 %d 1" % gid)):
                with open("/proc/self/" + name, "w") as f:
                    f.write(text)
        mount(None, "/", None, REC | PRIVATE)  # nothing mounted inside propagates to the host
    except BaseException as e:
        failure = "N %s" % e
    ours, theirs = socket.socketpair()
    if failure is None:
        pid = os.fork()
        if pid == 0:
            sock.close()
            ours.close()
            launcher(theirs)
    theirs.close()
    body, fds = receive(sock, 4)
    if body is None:
        os._exit(0)
    if failure:
        use_fds(fds)
        say(failure)
        os._exit(125)
    send(ours, body, fds)
    for fd in fds[:3]:
        os.close(fd)
    os.waitpid(pid, 0)
    os._exit(0)


def spare():
    # A new spare run: (runner pid, socket to it).
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            ours.close()
            runner(theirs)
        finally:
            os._exit(125)
    theirs.close()
    return pid, ours


ctl = socket.socket(fileno=int(sys.argv[1]))
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # runners are reaped by the kernel
ready = spare()
while True:
    body, fds = receive(ctl, 4)
    if body is None:
        os._exit(0)  # the caller is gone
    pid, sock = ready
    try:
        send(sock, body, fds)
    except OSError:  # the spare died: make one now
        sock.close()
        pid, sock = spare()
        send(sock, body, fds)
    ctl.sendall(pid.to_bytes(8, "little"))
    sock.close()
    for fd in fds:
        os.close(fd)
    ready = spare()
"""


class _Zygote:
    """The calling process's fork server (see `_ZYGOTE`): one per process, started on first use."""

    def __init__(self, setup: dict) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _ZYGOTE, str(theirs.fileno()),
                                          marshal.dumps(setup).hex()],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                                         env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"}, start_new_session=True)
        finally:
            theirs.close()
        self.sock, self.owner, self.setup, self.lock = ours, os.getpid(), setup, threading.Lock()

    def start(self, config: dict, fds: list[int]) -> int:
        """Hand one run to the zygote; returns its runner's pid. Raises OSError when the zygote is gone."""
        body = marshal.dumps(config)
        with self.lock:
            socket.send_fds(self.sock, [len(body).to_bytes(8, "little")], fds)
            self.sock.sendall(body)
            reply = b""
            while len(reply) < 8:
                chunk = self.sock.recv(8 - len(reply))
                if not chunk:
                    raise OSError("the sandbox's launcher process ended")
                reply += chunk
        return int.from_bytes(reply, "little")

    def close(self) -> None:
        self.sock.close()  # the zygote exits when its socket closes
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def _setup() -> dict:
    """What every run shares (see `_ZYGOTE`): a zygote serves runs only while this stays the same."""
    root = os.geteuid() == 0
    cover = _cover_dirs()
    return {"flags": _namespace_flags(root), "cover": cover, "expose": _expose_pairs(cover), "scratch": SCRATCH,
            "pseudo": list(PSEUDO_FS), "must_ro": list(MUST_BE_READ_ONLY)}


def _start_run(config: dict, fds: list[int]) -> int:
    """Start one run through this process's zygote, starting (or restarting) the zygote when needed."""
    global _zygote
    setup = _setup()
    for attempt in range(2):
        with _zygote_lock:
            # A forked child (a Spark worker forked from its daemon) must not share its parent's zygote.
            if _zygote is not None and _zygote.owner != os.getpid():
                _zygote.sock.close()  # this process's copy only; the zygote is its parent's
                _zygote = None
            if _zygote is not None and (_zygote.setup != setup or _zygote.proc.poll() is not None):
                _zygote.close()
                _zygote = None
            if _zygote is None:
                _zygote = _Zygote(setup)
            zygote = _zygote
        try:
            return zygote.start(config, fds)
        except OSError:
            if attempt:
                raise
            with _zygote_lock:
                if _zygote is zygote:
                    _zygote.close()
                    _zygote = None
    raise AssertionError("unreachable")


_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()


def _pick_uid() -> int:
    # Random rather than sequential, and from the OS rather than `random`: runs in other processes (Spark
    # workers forked from one daemon share a `random` state) draw from the same range.
    with _uid_lock:
        while True:
            uid = UID_BASE + secrets.randbelow(UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int | None) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _cover_dirs() -> list[str]:
    return [d for d in COVERED if os.path.isdir(d) and not os.path.islink(d)]


def _expose_pairs(cover: list[str]) -> list[tuple[str, str]]:
    """(directory, child) pairs to rebuild so the sandbox uid can reach the interpreter.

    A directory on the interpreter's path that "other" cannot enter, or that is covered, gets a tmpfs in
    the sandbox holding only `child`, bound to the original. Paths stay the same, which matters: a pyenv
    Python finds libpython through an absolute RUNPATH.
    """
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                                           os.path.dirname(os.path.realpath(sys.executable)))}
    pairs: list[tuple[str, str]] = []
    for root in sorted(roots):
        current = "/"
        for part in Path(root).parts[1:]:
            try:
                blocked = current in cover or not os.stat(current).st_mode & stat.S_IXOTH
            except OSError:
                break
            if blocked and (current, part) not in pairs:
                pairs.append((current, part))
            current = os.path.join(current, part)
    return sorted(pairs, key=lambda p: len(Path(p[0]).parts))


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def _pids_of_uid(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _drain(fd: int, seconds: float) -> bool:
    """Read fd until EOF or for `seconds`; True at EOF."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready and not os.read(fd, 65536):
            return True
    return False


def _kill(runner: int, status_r: int, uid: int | None) -> None:
    """Kill the sandbox and return once nothing of it runs.

    Killing the launcher (pid 1 inside) makes the kernel kill the rest of the namespace before the
    launcher turns into a zombie; the runner then reaps it and exits, and the status pipe's end of file
    (the runner and the launcher were its last writers) means the namespace is empty. If the launcher is
    not found (not started yet), the runner's process group goes instead.
    """
    launchers = _children(runner)
    for pid in launchers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if launchers and _drain(status_r, 5):
        return
    try:
        os.killpg(runner, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _drain(status_r, 5)
    if uid is not None:
        # The launcher may have been forked between the look-up and the group kill: sweep by uid.
        deadline = time.monotonic() + 5
        while (left := _pids_of_uid(uid)) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)


def _check_name(name: str) -> str:
    norm = os.path.normpath(name)
    if not name or os.path.isabs(name) or norm.startswith("..") or norm == ".":
        raise ValueError(f"sandbox file names must be relative paths inside the scratch dir: {name!r}")
    return norm


def _error(message: str, start: float, stderr: str = "") -> SandboxResult:
    tail = stderr.strip()[-500:]
    return SandboxResult(None, "", stderr, False, False, None, time.monotonic() - start, None,
                         f"{message}: {tail}" if tail else message)


def _namespace_flags(root: bool) -> int:
    """The run's namespaces: network, pid, mount, IPC and UTS; and a user namespace when not root."""
    flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    return flags if root else flags | CLONE_NEWUSER


def run_sandboxed(argv: list[str], files: dict[str, bytes | str] | None = None, stdin: bytes | str = b"",
                  limits: SandboxLimits | None = None) -> SandboxResult:
    """Run argv in a fresh sandbox and report what it did; never raises for anything the program does.

    argv[0] is looked up on SANDBOX_PATH inside. `files` (relative name -> content) are written into the
    scratch dir, the program's cwd, with mode 0700 so a binary can run as ./name. A result with `error` set
    means the sandbox failed and says nothing about the program. Raises ValueError for a file name that
    would leave the scratch dir.
    """
    limits = limits or SandboxLimits()
    start = time.monotonic()
    if not sys.platform.startswith("linux"):
        return _error(f"{NAMESPACES_UNAVAILABLE}: not Linux", start)
    contents = [(_check_name(name), content.encode() if isinstance(content, str) else bytes(content))
                for name, content in (files or {}).items()]
    uid = _pick_uid() if os.geteuid() == 0 else None
    cpu = max(1, math.ceil(limits.cpu_s))
    config = {
        "files": contents, "uid": uid, "backstop_s": math.ceil(limits.wall_s) + 5,
        "scratch_bytes": int(limits.scratch_bytes), "argv": [str(a) for a in argv],
        "env": {"PATH": SANDBOX_PATH, "HOME": SCRATCH, "TMPDIR": SCRATCH, "LANG": "C.UTF-8"},
        "rlimits": [
            (int(r), int(soft), int(hard)) for r, soft, hard in (
                (resource.RLIMIT_CPU, cpu, cpu + 1),
                (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
                (resource.RLIMIT_NPROC, limits.max_procs, limits.max_procs),
                (resource.RLIMIT_FSIZE, limits.max_file_bytes, limits.max_file_bytes),
                (resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files),
                (resource.RLIMIT_CORE, 0, 0),
                (resource.RLIMIT_STACK, limits.stack_bytes, limits.stack_bytes),
                (resource.RLIMIT_MEMLOCK, 0, 0),
                (resource.RLIMIT_MSGQUEUE, 0, 0),
            )
        ],
    }
    ours: list[int] = []  # stdin's write end, then the read ends of stdout, stderr and status
    theirs: list[int] = []  # the other ends, handed to the run
    try:
        for i in range(4):
            r, w = os.pipe()
            ours.append(w if i == 0 else r)
            theirs.append(r if i == 0 else w)
        try:
            runner = _start_run(config, theirs)
        except OSError as e:
            return _error(f"the sandbox launcher failed: {e}", start)
        for fd in theirs:
            os.close(fd)
        theirs = []
        stdin_w = ours.pop(0)  # _collect closes it
        return _collect(runner, stdin_w, *ours, stdin, limits, uid, start)
    finally:
        for fd in ours + theirs:
            os.close(fd)
        _release_uid(uid)


def _collect(runner: int, stdin_w: int, out_r: int, err_r: int, status_r: int, stdin: bytes | str,
             limits: SandboxLimits, uid: int | None, start: float) -> SandboxResult:
    """Feed stdin, read stdout/stderr/status under the output cap and the wall limit, then tear down.

    The run is over when the status pipe reaches end of file: its last writers are the launcher and the
    runner, and the runner exits only once the launcher, and so the whole namespace, is gone.
    """
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    out, err, status = bytearray(), bytearray(), bytearray()
    bufs = {out_r: out, err_r: err, status_r: status}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    stdin_open = bool(data)
    if stdin_open:
        os.set_blocking(stdin_w, False)
        sel.register(stdin_w, selectors.EVENT_WRITE)
    else:
        os.close(stdin_w)
    sent, budget = 0, limits.max_output_bytes
    deadline = start + limits.wall_s
    timed_out = truncated = False
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == stdin_w:
                    try:
                        sent += os.write(fd, data[sent:sent + 65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        sent = len(data)
                    if sent >= len(data):
                        sel.unregister(fd)
                        os.close(fd)
                        stdin_open = False
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                    continue
                if fd == status_r:
                    status += chunk
                    continue
                used = len(out) + len(err)
                bufs[fd] += chunk[:max(0, budget - used)]
                if used + len(chunk) > budget:
                    truncated = True
            if truncated:
                break
        killed = timed_out or truncated
        if killed:
            if stdin_open:
                os.close(stdin_w)
                stdin_open = False
            # What is left on the status pipe still counts: read it before the kill drains it.
            os.set_blocking(status_r, False)
            try:
                status += os.read(status_r, 65536)
            except (BlockingIOError, OSError):
                pass
            os.set_blocking(status_r, True)
            _kill(runner, status_r, uid)
    finally:
        sel.close()
        if stdin_open:
            os.close(stdin_w)
    wall = time.monotonic() - start
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    lines = status.decode("utf-8", "replace").splitlines()
    no_namespaces = next((line[2:] for line in lines if line.startswith("N ")), None)
    setup_error = next((line[2:] for line in lines if line.startswith("E ")), None)
    exec_error = next((line[2:] for line in lines if line.startswith("X ")), None)
    final = next((line.split() for line in lines if line.startswith("S ")), None)
    if no_namespaces:
        return _error(f"{NAMESPACES_UNAVAILABLE}: {no_namespaces}", start, stderr)
    if setup_error:
        return _error(setup_error, start, stderr)
    if exec_error:
        return _error(f"cannot execute the program: {exec_error}", start)
    if final is None and not killed:
        return _error("the sandbox launcher failed", start, stderr)
    if final is None and "R" not in lines:
        return _error("the sandbox did not finish its setup in time", start, stderr)
    returncode = sig = cpu = None
    if final is not None:
        code = os.waitstatus_to_exitcode(int(final[1]))
        cpu = float(final[2])
        if code < 0:
            sig = -code
        else:
            returncode = code
    else:
        sig = signal.SIGKILL.value
    cpu_limit = max(1, math.ceil(limits.cpu_s))
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu is not None and cpu >= cpu_limit):
        timed_out = True
    return SandboxResult(returncode, stdout, stderr, timed_out, truncated, sig, wall, cpu, None)


_available: str | None | bool = False


def sandboxed_python() -> list[str]:
    """The command that runs Python inside the sandbox: this interpreter's real file, isolated (-I) and without
    site (-S; sandboxed programs use the standard library only). The real file, because the sandbox shows only
    the interpreter's own trees: a path through a symlink elsewhere (a .venv that links to another one) does
    not exist in it."""
    return [os.path.realpath(sys.executable), "-I", "-S"]


def sandbox_available(refresh: bool = False) -> str | None:
    """None when a sandboxed run works on this machine, else the reason it does not (checked once)."""
    global _available
    if _available is False or refresh:
        res = run_sandboxed([*sandboxed_python(), "-c", "print('ok')"], limits=SandboxLimits(wall_s=30))
        if res.error:
            _available = res.error
        elif res.returncode != 0 or res.stdout.strip() != "ok":
            _available = f"a trivial program failed in the sandbox (exit {res.returncode}): {res.stderr[-300:]}"
        else:
            _available = None
    return _available


__all__ = ["NAMESPACES_UNAVAILABLE", "SCRATCH", "UID_BASE", "UID_SPAN", "SandboxLimits", "SandboxResult",
           "run_sandboxed", "sandbox_available"]
