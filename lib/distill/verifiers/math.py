"""Math answers checked with math-verify, each check in a worker process that is killed when it runs too long.

The final answer is pulled out of the response's answer part (`extract_final_answer`) and compared with the
reference by math-verify (`verify_pair`), which parses both sides into SymPy and tries string, numeric,
symbolic, set and interval equality. The result is binary: 1.0 when math-verify says equal, else 0.0. When
our patterns find no final answer, or none that math-verify can parse, math-verify's own extraction reads the
whole answer part (`verify_answer`) before the row is a parse_error.

Why a process pool of our own: SymPy can spin for minutes on answers such as `9^{9^{9^{9}}}`, part of it in
big-integer C calls that hold the GIL, and math-verify's own timeouts use SIGALRM, which only works on a
process's main thread (and only between bytecodes). A Spark task must never hang, so every (gold, answer)
pair runs in a worker process; a worker that has not answered within `timeout_s` is SIGKILLed and replaced,
its row gets status `timeout`, and the rest of the batch carries on. A batch therefore takes at most about
ceil(rows / workers) x timeout_s plus a small constant. concurrent.futures.ProcessPoolExecutor cannot kill
one stuck worker (it breaks the whole pool), hence `_Pool`.

Start method: "forkserver" where the platform has it, else "spawn"; never "fork". A Spark Python worker holds
a socket to the JVM and may run library threads (Arrow, pandas), and forking a threaded process can deadlock
the child on a lock some other thread held. The fork server is a fresh single-threaded interpreter that
imports and warms up math-verify once (`_warm_up`), so each worker, including the replacement for a killed
one, is a ~10 ms fork of a warm process; with "spawn" every replacement would pay ~1-2 s of imports and
warm-up again. The pool lives in a module-level cache for the life of the Python process (Spark reuses its
Python workers across tasks), dead workers are replaced at the next call, an atexit hook kills the workers,
and a worker whose parent died ends itself shortly after its row's deadline (see `_worker_main`).

An optional second stage, as in the paper: a `judge(question, reference, answer) -> (score | None, detail)`
callable is asked only when math-verify says "not equal" or cannot parse the answer; a judge score >= 0.5
makes the row pass (1.0), an unreadable judge reply (None) leaves math-verify's outcome, and an exception
from the judge makes the row an infra_error so that it is retried rather than scored.
"""

from __future__ import annotations

import atexit
import faulthandler
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.connection import wait as wait_any
from typing import Any

from distill.response import answer_part
from distill.verifiers.base import INFRA_ERROR, NO_VERIFIER, OK, PARSE_ERROR, TIMEOUT, VerifyResult, failed

VERSION = "2"  # 2: math-verify's own extraction when extract_final_answer finds nothing

# verify_pair outcomes
MATCH, NO_MATCH = "match", "no_match"
GOLD_UNPARSED, ANSWER_UNPARSED = "gold_unparsed", "answer_unparsed"

SHORT_ANSWER_CHARS = 100  # a whole answer part up to this long is taken as the final answer itself
DETAIL_CHARS = 200  # how much of the extracted answer the detail keeps
JUDGE_ANSWER_CHARS = 4000  # the judge sees the answer part, cut to this, not only the extracted span
START_TIMEOUT_S = 60.0  # a worker that is not ready by then is given up on (the fork server's first import)

# the optional second opinion, asked once per batch: [(question, reference, answer)] -> [(score | None, detail)]
Judge = Callable[[Sequence[tuple[str, str, str]]], "list[tuple[float | None, dict]]"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------
# Final-answer extraction


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_PHRASE = re.compile(r"\banswer\s*(?:is\b\s*:?|:)\s*", re.I)
# Spans are capped in length so that unclosed delimiters in a long response cost linear time, not quadratic.
_MATH_SPAN = re.compile(r"\$\$([^$]{1,500})\$\$|\$([^$]{1,500})\$|\\\((.{1,500}?)\\\)|\\\[(.{1,500}?)\\\]", re.S)
_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|\\fbox")


def _boxed_contents(text: str) -> list[str]:
    """Contents of the outermost `\\boxed{...}` / `\\fbox{...}` groups whose braces balance, in order.

    One pass with a stack, so that a degenerate response (thousands of unclosed boxes from a repetition loop)
    costs linear time. A backslash escapes the next character, so `\\boxed{\\{1,2\\}}` is one group; an
    unclosed group is dropped but closed boxes inside it are kept; a box inside a closed box stays in its
    parent's content.
    """
    openers = {m.end() - 1 for m in _BOXED.finditer(text)}  # positions of the "{" that open a box
    found: list[tuple[int, int]] = []
    stack: list[int] = []  # per open brace: where its content starts if it opens a box, else -1
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            stack.append(i + 1 if i in openers else -1)
        elif char == "}" and stack:
            start = stack.pop()
            if start >= 0:
                while found and found[-1][0] >= start:  # boxes inside this one
                    found.pop()
                found.append((start, i))
        i += 1
    return [text[start:end] for start, end in found]


def last_boxed(text: str | None) -> str | None:
    """The content of the last non-empty `\\boxed{...}` in `text`, or None."""
    boxed = [b.strip() for b in _boxed_contents(text or "") if b.strip()]
    return boxed[-1] if boxed else None


def _unwrap(text: str) -> str:
    """`$x$`, `$$x$$`, `\\(x\\)`, `\\[x\\]` -> `x` when the delimiters wrap the whole text; markdown bold and a
    closing full stop are dropped first."""
    text = text.strip().strip("*").strip().rstrip(".").strip()
    match = _MATH_SPAN.fullmatch(text)
    if match:
        text = next(g for g in match.groups() if g is not None).strip()
    return text


def extract_final_answer(answer: str | None) -> str | None:
    """The final answer in an answer part, or None when there is none to find.

    In order: the content of the LAST `\\boxed{...}` (or `\\fbox{...}`); else what follows the last
    "answer is" / "answer:" phrase ("The final answer is X.", "Final answer: $X$") up to the end of its line;
    else the last `$...$`, `$$...$$`, `\\(...\\)` or `\\[...\\]` span; else the whole answer part when it is at
    most SHORT_ANSWER_CHARS long. Math delimiters around the result are removed.
    """
    if not answer or not answer.strip():
        return None
    boxed = last_boxed(answer)
    if boxed:
        return boxed
    phrases = list(_ANSWER_PHRASE.finditer(answer))
    if phrases:
        tail = _unwrap(answer[phrases[-1].end() :].split("\n", 1)[0])
        if tail:
            return tail
    spans = list(_MATH_SPAN.finditer(answer))
    if spans:
        span = next(g for g in spans[-1].groups() if g is not None).strip()
        if span:
            return span
    whole = _unwrap(answer)
    return whole if whole and len(whole) <= SHORT_ANSWER_CHARS else None


# ---------------------------------------------------------------------------------------------------------
# math-verify, one pair, no pool


class PairTimeout(BaseException):
    """verify_pair ran past its timeout_s. A BaseException so that math-verify's `except Exception` cannot
    swallow it and report a plain mismatch instead."""


_MV: dict[str, Any] = {}


def _math_verify() -> dict[str, Any]:
    """math-verify's functions and extraction configs, imported on first use (it pulls in SymPy, ~1 s)."""
    if not _MV:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

        # The gold is parsed both as LaTeX and as a plain expression ("1/2", "x**2"); a box, when present, is
        # the first thing to read, since both sides are boxed before parsing (see _parse).
        config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
        # math-verify's own defaults, for a whole answer part (verify_answer's fallback)
        whole = [LatexExtractionConfig(), ExprExtractionConfig()]
        _MV.update(parse=parse, verify=verify, config=config, whole=whole)
    return _MV


def _parse(text: str) -> list:
    """math-verify's parse of a bare answer or reference. A bare `2\\sqrt{2}` is read by math-verify as "2"
    and a bare `\\{1,2\\}` not at all, while `\\boxed{...}` around them parses right, so a text without math
    delimiters is boxed first; the raw text is the fallback (e.g. when its braces do not balance)."""
    mv = _math_verify()
    candidates = [text] if _DELIMITED.search(text) else [f"\\boxed{{{text}}}", text]
    for candidate in candidates:
        parsed = mv["parse"](candidate, extraction_config=mv["config"], parsing_timeout=None)
        if parsed:
            return parsed
    return []


def _compare(gold: str, target: str, whole: bool = False) -> tuple[str, str | None]:
    """(outcome, the text math-verify read as the answer). `whole`: `target` is a whole answer part, read with
    math-verify's own extraction (the last LaTeX or plain expression it finds) instead of as a bare answer."""
    mv = _math_verify()
    parsed_gold = _parse(gold)
    if not parsed_gold:
        return GOLD_UNPARSED, None
    parsed_target = (mv["parse"](target, extraction_config=mv["whole"], parsing_timeout=None) if whole
                     else _parse(target))
    if not parsed_target:
        return ANSWER_UNPARSED, None
    # Gold first: math-verify is not symmetric (an assignment "x=3" in the answer is reduced to "3" only there).
    same = mv["verify"](parsed_gold, parsed_target, timeout_seconds=None)
    return (MATCH if same else NO_MATCH), str(parsed_target[-1])  # parse gives [SymPy object, matched text]


PATTERNS, MATH_VERIFY = "patterns", "math_verify"  # which extraction gave the compared answer


def verify_answer(gold: str, extracted: str | None, answer: str) -> tuple[str, str | None, str]:
    """verify_pair on our extracted final answer; when there is none, or math-verify cannot parse it, math-verify's
    own extraction over the whole answer part instead. Returns (outcome, the answer compared, PATTERNS or
    MATH_VERIFY). No timeout of its own: MathVerifier runs it in its worker processes."""
    if extracted is not None:
        outcome = _compare(gold, extracted)[0]
        if outcome != ANSWER_UNPARSED:
            return outcome, extracted, PATTERNS
    outcome, found = _compare(gold, answer, whole=True)
    if outcome == ANSWER_UNPARSED and extracted is not None:
        return outcome, extracted, PATTERNS  # math-verify found nothing either: the row says what we found
    return outcome, found, MATH_VERIFY


def _on_alarm(signum: int, frame: Any) -> None:
    raise PairTimeout()


def verify_pair(gold: str, target: str, timeout_s: float | None = None) -> str:
    """math-verify on one (reference, extracted answer) pair, in this process: MATCH, NO_MATCH, GOLD_UNPARSED
    or ANSWER_UNPARSED.

    math-verify's own per-step alarms are off (they would turn a timeout into a silent NO_MATCH or an empty
    parse); `timeout_s`, when given, is one SIGALRM deadline for the whole pair and raises PairTimeout. That
    needs the main thread and cannot interrupt a long C call (a huge integer power), which is why
    MathVerifier runs this in worker processes it can kill, with timeout_s None.
    """
    if timeout_s is None:
        return _compare(gold, target)[0]
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("verify_pair(timeout_s=...) needs the main thread (SIGALRM); pass None or use a pool")
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return _compare(gold, target)[0]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------------------------
# The worker process pool


ORPHAN_GRACE_S = 2.0  # a worker ends itself this long after the parent's kill was due (see _worker_main)


def _worker_main(conn: Any) -> None:
    """A worker: answer (job_id, gold, extracted, answer part, timeout_s) messages with (job_id, outcome) until
    None or EOF.

    An outcome is ("done", verify_answer's (result, compared, extraction)) or ("error", text). The parent's
    SIGKILL is the timeout. The faulthandler timer is only for a worker whose parent died mid-check (a lost
    executor): an idle orphan sees EOF, but a busy one would spin on its pair for minutes. A Python watchdog
    thread cannot help there, since SymPy's long big-integer C calls hold the GIL; faulthandler's timer is a C
    thread that needs no GIL and calls _exit.
    """
    _warm_up()  # nothing to do when forked from the warm fork server; with "spawn", paid before "ready"
    devnull = open(os.devnull, "w")  # faulthandler writes its traceback here; open for the worker's life
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        job_id, gold, extracted, answer, timeout_s = job
        faulthandler.dump_traceback_later(timeout_s + ORPHAN_GRACE_S, exit=True, file=devnull)
        try:
            outcome = ("done", verify_answer(gold, extracted, answer))
        except Exception as exc:  # reported as infra_error for this row; the worker stays usable
            outcome = ("error", f"{type(exc).__name__}: {exc}"[:300])
        finally:
            faulthandler.cancel_dump_traceback_later()
        try:
            conn.send((job_id, outcome))
        except (OSError, ValueError):
            return


_WARM_ENV = "DISTILL_MATH_VERIFY_WARM"  # set to our pid while the fork server starts: it warms up on import
_WARM_PAIRS = [("1/2", "0.5"), (r"2\sqrt{2}", r"\sqrt{8}"), (r"\{1,2\}", r"\{2,1\}"), ("[1,2)", "(1,2]"),
               ("3", "x=3"), ("x^2+2x+1", "(x+1)^2"), (r"\frac{\pi}{2}", r"\text{no}"), (r"10\%", "0.1")]
_warmed = False


def _warm_up() -> None:
    """Compare a few typical pairs once. math-verify builds much of its state lazily (ANTLR's parse tables,
    SymPy's caches, compiled regexes): a cold process needs ~0.1 s per row for its first rows instead of ~10 ms,
    and after every timeout kill the replacement would pay that again."""
    global _warmed
    if _warmed:
        return
    _warmed = True
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" warning
    try:
        for gold, target in _WARM_PAIRS:
            _compare(gold, target)
    except Exception:  # only a speed-up; a failure here must not stop the fork server or a worker
        log.debug("math-verify warm-up failed", exc_info=True)


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver

    ctx = multiprocessing.get_context("forkserver")
    # Both only take effect if this process's fork server is not running yet; otherwise workers are just
    # slower to warm up. The server imports this module, which warms it up when it sees _WARM_ENV (see the end
    # of this module), so that every worker forks from a warm interpreter.
    ctx.set_forkserver_preload(["math_verify", "distill.verifiers.math"])
    os.environ[_WARM_ENV] = str(os.getpid())
    try:
        forkserver.ensure_running()
    finally:
        os.environ.pop(_WARM_ENV, None)
    return ctx


_START_LOCK = threading.Lock()


@contextmanager
def _main_hidden() -> Iterator[None]:
    """Hide the caller's `__main__` while a worker starts.

    forkserver and spawn children re-import the parent's main module (a script without an `if __name__ ==
    "__main__"` guard would then start pools of its own; under Spark it is pyspark.daemon, a needless import per
    worker). The worker needs nothing from it: with a bare stand-in, multiprocessing sends no main to rebuild.
    """
    with _START_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


class _Worker:
    def __init__(self, ctx: multiprocessing.context.BaseContext) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="distill-math-verify")
        with _main_hidden():
            self.proc.start()
        child.close()
        self.ready = False
        self.job: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.join(timeout=2.0)
        except Exception:  # already gone, or never fully started
            pass
        self.conn.close()


# A pool's per-row outcome: ("done", verify_pair result) | ("timeout", None) | ("error", detail dict)
Outcome = tuple[str, Any]
ASK_JUDGE = (("done", NO_MATCH), ("done", ANSWER_UNPARSED))  # the outcomes a configured judge may overturn


class _Pool:
    """`size` worker processes. `run` hands out pairs one per idle worker, kills a worker that passes its row's
    deadline and replaces it, and returns one outcome per pair, in order. Not re-entrant: one run at a time."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pid = os.getpid()
        self.ctx = _context()
        self.lock = threading.Lock()
        self.workers: list[_Worker] = []

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc.pid is not None]

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers[self.workers.index(worker)] = _Worker(self.ctx)

    def run(self, pairs: Sequence[tuple[str, str | None, str]], timeout_s: float) -> list[Outcome]:
        """Each (gold, extracted answer, answer part)'s outcome, in order (see _worker_main)."""
        with self.lock:
            return self._run(pairs, timeout_s)

    def _run(self, pairs: Sequence[tuple[str, str | None, str]], timeout_s: float) -> list[Outcome]:
        results: list[Outcome | None] = [None] * len(pairs)
        for worker in list(self.workers):
            if not worker.proc.is_alive():  # died between calls (OOM killer, someone's kill)
                self._replace(worker)
        while len(self.workers) < self.size:
            self.workers.append(_Worker(self.ctx))

        pending = deque(range(len(pairs)))
        start_failures, stalled_since = 0, time.monotonic()
        while pending or any(w.job is not None for w in self.workers):
            now = time.monotonic()
            for worker in self.workers:
                if worker.ready and worker.job is None and pending:
                    index = pending.popleft()
                    try:
                        worker.conn.send((index, *pairs[index], timeout_s))
                    except (OSError, ValueError):
                        pending.appendleft(index)  # the worker died idle: not this row's fault
                        self._replace(worker)
                        continue
                    worker.job, worker.deadline = index, now + timeout_s
            busy = [w for w in self.workers if w.job is not None]
            if busy:
                stalled_since = now
            elif now - stalled_since > START_TIMEOUT_S or start_failures > 3 * self.size:
                reason = "worker_start_timeout" if start_failures <= 3 * self.size else "worker_start_failed"
                for index in pending:
                    results[index] = ("error", {"reason": reason})
                self.close()
                break
            wake = min([w.deadline for w in busy], default=stalled_since + START_TIMEOUT_S)
            waitables = [w.conn for w in self.workers] + [w.proc.sentinel for w in self.workers]
            ready = set(wait_any(waitables, timeout=max(0.0, wake - time.monotonic())))

            for worker in list(self.workers):
                if worker.conn in ready:
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        message = None  # died; handled with the sentinel below
                    if message is not None:
                        if message[0] == "ready":
                            worker.ready = True
                        elif message[0] == worker.job:
                            results[worker.job] = message[1]
                            worker.job = None
                        continue
                if worker.conn in ready or worker.proc.sentinel in ready:
                    worker.proc.join(timeout=1.0)
                    if worker.job is not None and time.monotonic() >= worker.deadline:
                        results[worker.job] = ("timeout", None)  # it ended itself (see _worker_main): we were late
                    elif worker.job is not None:
                        results[worker.job] = ("error", {"reason": "worker_died", "exitcode": worker.proc.exitcode})
                    elif not worker.ready:
                        start_failures += 1
                    self._replace(worker)

            now = time.monotonic()
            for worker in list(self.workers):
                if worker.job is not None and now >= worker.deadline:
                    results[worker.job] = ("timeout", None)
                    self._replace(worker)  # SIGKILL: the only way to stop SymPy inside a C call
        return [r if r is not None else ("error", {"reason": "not_run"}) for r in results]


_POOLS: dict[int, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(size: int) -> _Pool:
    with _POOLS_LOCK:
        pool = _POOLS.get(size)
        if pool is not None and pool.pid != os.getpid():
            pool = None  # inherited through a fork: those workers are the parent's, not ours to use or kill
        if pool is None:
            pool = _POOLS[size] = _Pool(size)
        return pool


def _discard_pool(size: int) -> None:
    with _POOLS_LOCK:
        pool = _POOLS.pop(size, None)
    if pool is not None and pool.pid == os.getpid():
        pool.close()


@atexit.register
def shutdown_pools() -> None:
    """Kill every cached worker process of this Python process (also run at exit)."""
    with _POOLS_LOCK:
        pools = [p for p in _POOLS.values() if p.pid == os.getpid()]
        _POOLS.clear()
    for pool in pools:
        pool.close()


# ---------------------------------------------------------------------------------------------------------
# The verifier


def equivalent(pairs: Sequence[tuple[str, str]], workers: int | None = None,
               timeout_s: float = 5.0) -> list[bool | None]:
    """For each (a, b): whether math-verify finds b equal to a (a read as the reference), checked in the same
    killable worker pool as verification. None: it could not tell (a timeout, a side that does not parse)."""
    outcomes = MathVerifier(workers, timeout_s)._run_pool([(a, b, b) for a, b in pairs]) if pairs else []
    return [{MATCH: True, NO_MATCH: False}.get(_plain(o)[1]) if o[0] == "done" else None for o in outcomes]


def _question(row: dict) -> str:
    messages = row.get("messages") or [{"role": "user", "content": row.get("query") or ""}]
    return next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")


def _plain(outcome: Outcome) -> Outcome:
    """A pool outcome with verify_answer's (result, compared, extraction) reduced to the result."""
    kind, value = outcome
    return (kind, value[0]) if kind == "done" else outcome


class MathVerifier:
    """Binary math verification: math-verify in killable worker processes, then an optional judge.

    A row needs `response` and `reference_answer`; `messages` or `query` give the judge the question.
    `workers` defaults to os.cpu_count(); inside Spark, pass the cores one task may use (spark.task.cpus),
    since every Python worker of an executor keeps its own pool. Pools are cached per worker count for the
    life of the process and shared by verifiers with the same count.
    """

    name = "math"
    version = VERSION

    def __init__(self, workers: int | None = None, timeout_s: float = 5.0, judge: Judge | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.timeout_s = float(timeout_s)
        self.judge = judge

    def worker_pids(self) -> list[int]:
        """Process ids of this verifier's pool workers (empty before the first check)."""
        pool = _POOLS.get(self.workers)
        return pool.pids() if pool is not None and pool.pid == os.getpid() else []

    def verify_many(self, rows: Sequence[dict]) -> list[VerifyResult]:
        results: list[VerifyResult | None] = [None] * len(rows)
        jobs: list[tuple[int, str, str | None, str]] = []  # (row index, gold, extracted answer or None, answer part)
        for i, row in enumerate(rows):
            reference = row.get("reference_answer")
            if reference is None or not str(reference).strip():
                results[i] = failed(self, NO_VERIFIER, reason="no_reference")
                continue
            response = row.get("response")
            answer = answer_part(response if isinstance(response, str) else None)
            if not answer:
                results[i] = failed(self, PARSE_ERROR, reason="no_answer")
                continue
            jobs.append((i, str(reference).strip(), extract_final_answer(answer), answer))

        if jobs:
            outcomes = self._run_pool([job[1:] for job in jobs])
            for (i, _, extracted, _), outcome in zip(jobs, outcomes, strict=True):
                results[i] = self._result(extracted, outcome)
            if self.judge is not None:  # math-verify said no or could not read the answer: the judge decides
                self._ask_judge(rows, results, [(i, gold, answer) for (i, gold, _, answer), outcome
                                                in zip(jobs, outcomes, strict=True) if _plain(outcome) in ASK_JUDGE])
        return results  # type: ignore[return-value]

    def _run_pool(self, pairs: list[tuple[str, str]]) -> list[Outcome]:
        try:
            return _pool(self.workers).run(pairs, self.timeout_s)
        except Exception as exc:  # the pool machinery itself failed: retry later, never raise into Spark
            log.exception("math-verify pool failed")
            _discard_pool(self.workers)
            return [("error", {"reason": f"pool: {type(exc).__name__}: {exc}"[:300]})] * len(pairs)

    def _result(self, extracted: str | None, outcome: Outcome) -> VerifyResult:
        kind, value = outcome
        detail: dict[str, Any] = {"stage": "math_verify"}
        compared = extracted
        if kind == "done":
            value, compared, extraction = value
            if extraction == MATH_VERIFY:  # our patterns found nothing that math-verify could parse
                detail["extraction"] = MATH_VERIFY
        if compared:
            detail["extracted"] = compared[:DETAIL_CHARS]
        if kind == "timeout":
            return failed(self, TIMEOUT, reason="timeout", timeout_s=self.timeout_s, **detail)
        if kind == "error":
            return failed(self, INFRA_ERROR, **(value if isinstance(value, dict) else {"reason": value}), **detail)
        if value == MATCH:
            return VerifyResult(1.0, OK, self.name, self.version, detail)
        if value == GOLD_UNPARSED:
            return failed(self, PARSE_ERROR, reason=GOLD_UNPARSED, **detail)
        if value == NO_MATCH:
            return VerifyResult(0.0, OK, self.name, self.version, {**detail, "math_verify": value})
        # neither extraction found an answer, or none of what was found parses
        return failed(self, PARSE_ERROR, reason=ANSWER_UNPARSED if compared else "no_final_answer", **detail)

    def _ask_judge(self, rows: Sequence[dict], results: list, asks: list[tuple[int, str, str]]) -> None:
        """One judge batch for the rows math-verify could not confirm; its verdicts replace theirs."""
        if not asks:
            return
        try:
            opinions = self.judge([(_question(rows[i]), gold, answer[:JUDGE_ANSWER_CHARS])
                                   for i, gold, answer in asks])
        except Exception as exc:  # a judge outage is not a wrong answer: retry the rows later
            for i, _, _ in asks:
                results[i] = failed(self, INFRA_ERROR, **{**results[i].detail,
                                                          "reason": f"judge: {type(exc).__name__}: {exc}"[:300]})
            return
        for (i, _, _), (score, judge_detail) in zip(asks, opinions, strict=True):
            results[i] = self._judged(results[i], score, judge_detail)

    def _judged(self, first: VerifyResult, score: float | None, judge_detail: dict) -> VerifyResult:
        if score is None:
            detail = {**first.detail, "judge": {"reason": "unreadable_judge_output", **(judge_detail or {})}}
            return VerifyResult(first.score, first.status, self.name, self.version, detail)
        detail = {k: v for k, v in first.detail.items() if k != "reason"}  # the judge decided: not a parse error
        detail.update(stage="judge", math_verify=first.detail.get("math_verify", ANSWER_UNPARSED),
                      judge_score=float(score))
        if judge_detail:
            detail["judge"] = judge_detail
        return VerifyResult(1.0 if score >= 0.5 else 0.0, OK, self.name, self.version, detail)


if os.environ.get(_WARM_ENV) == str(os.getppid()):
    _warm_up()  # this is the fork server that _context() is starting
