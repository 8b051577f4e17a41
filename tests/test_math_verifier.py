"""The math verifier: final-answer extraction, math-verify equivalences on both sides, statuses for rows that
cannot be checked, the worker pool's hard timeout and its recovery from killed workers, and the judge hook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from distill.verifiers.base import INFRA_ERROR, NO_VERIFIER, OK, PARSE_ERROR, TIMEOUT
from distill.verifiers.math import (
    ANSWER_UNPARSED,
    GOLD_UNPARSED,
    MATCH,
    NO_MATCH,
    VERSION,
    MathVerifier,
    PairTimeout,
    extract_final_answer,
    verify_pair,
)

# SymPy works on this for minutes (evaluating the power tower to compare it), partly in C calls holding the GIL.
PATHOLOGICAL = r"9^{9^{9^{9}}}"


def row(answer: str | None, reference: str | None, **extra) -> dict:
    response = None if answer is None else f"<think>working</think><answer>{answer}</answer>"
    return {"response": response, "reference_answer": reference, **extra}


@pytest.fixture(scope="module")
def verifier():
    # Two workers, as on the test machine; the pool is cached, so its start is paid once for the module.
    return MathVerifier(workers=2, timeout_s=5.0)


# --- extraction ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, expected", [
    (r"So $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),
    (r"\boxed{\frac{\sqrt{2}}{\left(1+\frac{1}{2}\right)}}", r"\frac{\sqrt{2}}{\left(1+\frac{1}{2}\right)}"),
    (r"First \boxed{3}, corrected: \boxed{4}", "4"),
    (r"\fbox{7}", "7"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"\boxed{\boxed{5}}", r"\boxed{5}"),
    (r"\boxed{3} and an unclosed \boxed{4", "3"),
    (r"\boxed{x = \boxed{5}", "5"),
    ("We simplify.\nThe answer is 42.", "42"),
    ("The final answer is: $\\frac{3}{4}$.", r"\frac{3}{4}"),
    ("**Final answer:** $x=3$", "x=3"),
    (r"We get $a=1$ and finally $a+b=\sqrt{5}$ as required by the problem statement, which is long enough",
     r"a+b=\sqrt{5}"),
    ("  12 cm. ", "12 cm"),
    (r"\(\pi/2\)", r"\pi/2"),
])
def test_extract_final_answer(answer, expected):
    assert extract_final_answer(answer) == expected


@pytest.mark.parametrize("answer", [None, "", "   ", r"\boxed{}" + " " + "prose " * 30,
                                    "A long explanation without any formula or stated result. " * 3])
def test_extract_final_answer_none(answer):
    assert extract_final_answer(answer) is None


def test_extraction_of_a_degenerate_response_is_linear():
    start = time.monotonic()
    assert extract_final_answer(r"\boxed{\frac{1}{2}" * 20_000 + r"\(" * 20_000 + "$" * 2001) is None
    assert extract_final_answer(r"\boxed{\frac{1}{2}" * 20_000 + r" \boxed{7}") == "7"
    assert time.monotonic() - start < 1.0


# --- math-verify on pairs (in this process) --------------------------------------------------------------


@pytest.mark.parametrize("gold, target, expected", [
    ("1/2", "0.5", MATCH),
    ("0.5", "1/2", MATCH),
    (r"\frac{1}{2}", "0.5", MATCH),
    ("0.5", r"\frac12", MATCH),
    (r"2\sqrt{2}", r"\sqrt{8}", MATCH),
    (r"\sqrt{8}", r"2\sqrt{2}", MATCH),
    (r"\{1,2\}", r"\{2,1\}", MATCH),
    (r"\{1,2\}", r"\{1,3\}", NO_MATCH),
    ("[1,2)", "[1, 2)", MATCH),
    ("(1,2]", "[1,2)", NO_MATCH),
    (r"(-\infty, 2]", r"(-\infty,2]", MATCH),
    ("3", "x=3", MATCH),
    ("x=3", "3", MATCH),
    ("x^2+2x+1", "(x+1)^2", MATCH),
    ("5", "6", NO_MATCH),
    ("-3", "3", NO_MATCH),
    (r"\frac{1}{2}", "0.51", NO_MATCH),
    ("}{", "1", GOLD_UNPARSED),
    ("1", r"\text{}", ANSWER_UNPARSED),
])
def test_verify_pair(gold, target, expected):
    assert verify_pair(gold, target) == expected


def test_verify_pair_timeout_on_the_main_thread():
    start = time.monotonic()
    with pytest.raises(PairTimeout):
        verify_pair("5", PATHOLOGICAL, timeout_s=0.5)
    assert time.monotonic() - start < 2.0
    assert verify_pair("5", "5", timeout_s=1.0) == MATCH  # the alarm is cleared


def test_verify_pair_timeout_refuses_other_threads():
    caught = []

    def call():
        try:
            verify_pair("1", "1", timeout_s=1.0)
        except RuntimeError as exc:
            caught.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert len(caught) == 1 and "main thread" in str(caught[0])


# --- the verifier ----------------------------------------------------------------------------------------


def test_rows_that_cannot_be_checked_do_not_start_a_pool():
    verifier = MathVerifier(workers=7)  # a worker count no other test uses: its pool would be new
    results = verifier.verify_many([
        row(r"\boxed{1}", None),
        row(r"\boxed{1}", "  "),
        row(None, "1"),
        {"response": "no tags at all", "reference_answer": "1"},
    ])
    assert [(r.status, r.detail["reason"]) for r in results] == [
        (NO_VERIFIER, "no_reference"), (NO_VERIFIER, "no_reference"), (PARSE_ERROR, "no_answer"),
        (PARSE_ERROR, "no_answer")]
    assert all(r.score == 0.0 and r.verifier == "math" and r.verifier_version == VERSION for r in results)
    assert verifier.worker_pids() == []


def test_math_verify_reads_the_whole_answer_when_our_patterns_find_nothing_that_parses(verifier):
    long = "We count the cases one by one and add them up, which gives a total of 12 in the end. " * 2
    unparsed = "Adding the cases gives 12 in all, so the answer is: }{"  # our phrase finds what cannot parse
    nothing = "Nothing to see here. " * 6
    assert extract_final_answer(long) is None and extract_final_answer(nothing) is None
    assert extract_final_answer(unparsed) == "}{" and verify_pair("12", "}{") == ANSWER_UNPARSED
    results = verifier.verify_many([row(long, "12"), row(long, "13"), row(unparsed, "12"), row(nothing, "1"),
                                    row(r"\boxed{12}", "12")])
    assert [(r.status, r.score) for r in results] == [(OK, 1.0), (OK, 0.0), (OK, 1.0), (PARSE_ERROR, 0.0), (OK, 1.0)]
    fallback = {"stage": "math_verify", "extraction": "math_verify"}
    assert results[0].detail == {**fallback, "extracted": "12"}
    assert results[1].detail == {**fallback, "extracted": "12", "math_verify": NO_MATCH}
    assert results[2].detail == {**fallback, "extracted": "12"}
    assert results[3].detail == {**fallback, "reason": "no_final_answer"}
    assert results[4].detail == {"stage": "math_verify", "extracted": "12"}  # our patterns, as before


def test_verify_many_scores_in_input_order(verifier):
    rows = [
        row(r"\boxed{0.5}", r"\frac{1}{2}"),
        row("The answer is $2\\sqrt{2}$.", r"\sqrt{8}"),
        row(r"\boxed{7}", "8"),
        row(r"\boxed{x = 3}", "3"),
        row(r"\boxed{\{2, 1\}}", r"\{1,2\}"),
        row(r"\boxed{1}", "}{"),
        row(r"\boxed{\text{}}", "1"),
        row(r"\boxed{[1,2)}", "(1,2]"),
    ]
    results = verifier.verify_many(rows)
    assert [(r.status, r.score) for r in results] == [
        (OK, 1.0), (OK, 1.0), (OK, 0.0), (OK, 1.0), (OK, 1.0), (PARSE_ERROR, 0.0), (PARSE_ERROR, 0.0), (OK, 0.0)]
    assert results[1].detail == {"extracted": r"2\sqrt{2}", "stage": "math_verify"}
    assert results[2].detail["math_verify"] == NO_MATCH
    assert results[5].detail["reason"] == GOLD_UNPARSED
    assert results[6].detail["reason"] == ANSWER_UNPARSED
    assert results[0].passed and not results[2].passed


def test_pathological_answer_times_out_and_the_pool_carries_on():
    verifier = MathVerifier(workers=2, timeout_s=1.0)
    verifier.verify_many([row(r"\boxed{1}", "1")])  # the pool is started outside the timing
    rows = [row(r"\boxed{1}", "1"), row(rf"\boxed{{{PATHOLOGICAL}}}", "5"), row(r"\boxed{2}", "3")]
    start = time.monotonic()
    results = verifier.verify_many(rows)
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == [OK, TIMEOUT, OK]
    assert results[1].detail["reason"] == "timeout" and results[1].detail["timeout_s"] == 1.0
    assert elapsed < 1.0 + 1.5
    assert [(r.status, r.score) for r in verifier.verify_many([row(r"\boxed{4}", "4")])] == [(OK, 1.0)]


def test_killed_busy_worker_is_an_infra_error_and_is_replaced():
    verifier = MathVerifier(workers=1, timeout_s=30.0)
    verifier.verify_many([row(r"\boxed{1}", "1")])
    (pid,) = verifier.worker_pids()
    results = []
    thread = threading.Thread(target=lambda: results.extend(
        verifier.verify_many([row(rf"\boxed{{{PATHOLOGICAL}}}", "5")])))
    start = time.monotonic()
    thread.start()
    time.sleep(0.5)  # the worker is now deep in SymPy
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=10)
    assert not thread.is_alive() and time.monotonic() - start < 5
    assert [r.status for r in results] == [INFRA_ERROR]
    assert results[0].detail["reason"] == "worker_died" and results[0].detail["exitcode"] == -signal.SIGKILL
    assert [r.status for r in verifier.verify_many([row(r"\boxed{2}", "2")])] == [OK]
    assert verifier.worker_pids() != [pid]


def test_worker_killed_between_calls_is_restarted(verifier):
    verifier.verify_many([row(r"\boxed{1}", "1")])
    pids = verifier.worker_pids()
    os.kill(pids[0], signal.SIGKILL)
    time.sleep(0.2)
    results = verifier.verify_many([row(rf"\boxed{{{i}}}", str(i)) for i in range(4)])
    assert [(r.status, r.score) for r in results] == [(OK, 1.0)] * 4
    assert pids[0] not in verifier.worker_pids() and len(verifier.worker_pids()) == 2


@pytest.mark.slow
def test_batch_with_several_pathological_rows_is_bounded():
    workers, timeout_s, n_bad = 2, 1.5, 6
    verifier = MathVerifier(workers=workers, timeout_s=timeout_s)
    verifier.verify_many([row(r"\boxed{1}", "1")])
    rows = [row(rf"\boxed{{{PATHOLOGICAL}}}", "5") if i % 4 == 0 else row(rf"\boxed{{{i}}}", str(i))
            for i in range(4 * n_bad)]
    start = time.monotonic()
    results = verifier.verify_many(rows)
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == [TIMEOUT if i % 4 == 0 else OK for i in range(len(rows))]
    assert elapsed < n_bad * timeout_s / workers + 2.0


ORPHAN_SCRIPT = """
import sys
from distill.verifiers.math import MathVerifier
v = MathVerifier(workers=1, timeout_s=1.0)
v.verify_many([{"response": "<answer>1</answer>", "reference_answer": "1"}])
print(v.worker_pids()[0], flush=True)
v.verify_many([{"response": "<answer>" + sys.argv[1] + "</answer>", "reference_answer": "5"}])
"""


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_busy_worker_ends_itself_when_its_parent_dies():
    with subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT, rf"\boxed{{{PATHOLOGICAL}}}"],
                          stdout=subprocess.PIPE, text=True) as parent:
        pid = int(parent.stdout.readline())
        time.sleep(0.3)  # the worker has the pathological pair now
        parent.kill()
    deadline = time.monotonic() + 1.0 + 2.0 + 3.0  # timeout + the worker's own grace + slack
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(pid)


# --- the judge hook --------------------------------------------------------------------------------------


class FakeJudge:
    """The batch protocol of Judge.math_verdicts: one call per batch, one (score, detail) per item."""

    def __init__(self, score):
        self.score, self.calls, self.batches = score, [], 0

    def __call__(self, items):
        self.batches += 1
        self.calls += items
        if isinstance(self.score, Exception):
            raise self.score
        return [(self.score, {"reply": "fake"}) for _ in items]


JUDGED_ROWS = [
    row(r"\boxed{1}", "1", query="one?"),  # math-verify: match -> not asked
    row(r"Thinking aloud. \boxed{2}", "3",  # no match -> asked, with the last user message
        messages=[{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                  {"role": "user", "content": "three?"}]),
    row(r"\boxed{\text{}}", "4", query="four?"),  # answer unparsed -> asked
    row(r"\boxed{1}", "}{", query="gold?"),  # gold unparsed -> not asked
    row(None, "5", query="none?"),  # no answer -> not asked
]


def test_judge_is_asked_only_when_math_verify_fails_and_upgrades():
    judge = FakeJudge(0.8)
    results = MathVerifier(workers=2, judge=judge).verify_many(JUDGED_ROWS)
    assert [c[:2] for c in judge.calls] == [("three?", "3"), ("four?", "4")] and judge.batches == 1
    assert judge.calls[0][2] == r"Thinking aloud. \boxed{2}"  # the judge reads the whole answer part
    assert [(r.status, r.score) for r in results] == [
        (OK, 1.0), (OK, 1.0), (OK, 1.0), (PARSE_ERROR, 0.0), (PARSE_ERROR, 0.0)]
    assert results[0].detail["stage"] == "math_verify"
    assert results[1].detail["stage"] == "judge" and results[1].detail["math_verify"] == NO_MATCH
    assert results[1].detail["judge_score"] == 0.8 and results[1].detail["judge"] == {"reply": "fake"}
    assert results[2].detail["math_verify"] == ANSWER_UNPARSED


def test_judge_saying_no_confirms_a_zero():
    results = MathVerifier(workers=2, judge=FakeJudge(0.2)).verify_many(JUDGED_ROWS[1:3])
    assert [(r.status, r.score, r.detail["stage"]) for r in results] == [(OK, 0.0, "judge"), (OK, 0.0, "judge")]


def test_unreadable_judge_keeps_math_verify_outcome():
    results = MathVerifier(workers=2, judge=FakeJudge(None)).verify_many(JUDGED_ROWS[1:3])
    assert [(r.status, r.score) for r in results] == [(OK, 0.0), (PARSE_ERROR, 0.0)]
    assert results[1].detail["reason"] == ANSWER_UNPARSED and results[1].detail["stage"] == "math_verify"
    assert results[0].detail["judge"]["reason"] == "unreadable_judge_output"


def test_judge_failure_is_an_infra_error_for_the_rows_that_asked():
    results = MathVerifier(workers=2, judge=FakeJudge(ConnectionError("down"))).verify_many(JUDGED_ROWS)
    assert [r.status for r in results] == [OK, INFRA_ERROR, INFRA_ERROR, PARSE_ERROR, PARSE_ERROR]
    assert "ConnectionError" in results[1].detail["reason"]
