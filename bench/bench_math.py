"""Math verification throughput and the hard timeout, measured side by side in one run (compare ratios).

  .venv/bin/python bench/bench_math.py [--rows 400] [--workers 2] [--bad 8] [--normal 40] [--bad-timeout 2]

Prints:
  sequential  a plain loop of extract_final_answer + verify_pair over the rows, in this process
  pool        MathVerifier(workers).verify_many over the same rows (its pool started outside the timing)
and the ratio pool/sequential in rows/s; then, for a batch of `bad` pathological answers mixed into `normal`
rows with a `bad-timeout` limit, the elapsed time against the bound bad x bad-timeout / workers + SLACK_S.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

# The "small constant": the normal rows' own work (~0.3 s per worker on idle cores, more on busy ones), the
# kills and respawns (~10 ms each), and the parent's bookkeeping.
SLACK_S = 2.0
# Each keeps SymPy busy for far longer than any timeout here (see tests/test_math_verifier.py).
PATHOLOGICAL = [r"9^{9^{9^{9}}}", r"9^{9^{9}}", r"(10^{100})!", r"7^{10^{7}}"]


def pair(rng: random.Random, i: int) -> tuple[str, str, bool]:
    """(reference, answer text, is the answer right) in one of several forms, right two times in three."""
    a, b = rng.randint(2, 60) + i, rng.randint(2, 9)
    right = rng.random() < 2 / 3
    kind = i % 7
    if kind == 0:
        return str(a), str(a if right else a + 1), right
    if kind == 1:
        return rf"\frac{{{a}}}{{{2 ** b}}}", f"{(a if right else a + 1) / 2 ** b}", right
    if kind == 2:
        return rf"{a}\sqrt{{2}}", rf"\sqrt{{{2 * a * a + (0 if right else 1)}}}", right
    if kind == 3:
        return rf"\{{{a}, {a + b}\}}", rf"\{{{a + b}, {a if right else a - 1}\}}", right
    if kind == 4:
        return f"[{a}, {a + b})", (f"[{a},{a + b})" if right else f"({a}, {a + b}]"), right
    if kind == 5:
        return str(a), f"x = {a if right else -a}", right
    return f"x^2 + {2 * a}x + {a * a}", f"(x + {a if right else a + 1})^2", right


def response(rng: random.Random, answer: str) -> str:
    think = "<think>Let me work this out step by step.</think>"
    if rng.random() < 0.5:
        return f"{think}<answer>Working through it, we get $\\boxed{{{answer}}}$.</answer>"
    return f"{think}<answer>Putting it together.\nThe answer is ${answer}$.</answer>"


def rows_mixed(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        gold, answer, right = pair(rng, i)
        out.append({"id": f"m{i}", "reference_answer": gold, "response": response(rng, answer), "right": right})
    return out


def time_sequential(rows: list[dict], timeout_s: float) -> tuple[float, list[float]]:
    from distill.response import answer_part
    from distill.verifiers.math import MATCH, extract_final_answer, verify_pair

    scores = []
    start = time.perf_counter()
    for r in rows:
        target = extract_final_answer(answer_part(r["response"]))
        scores.append(1.0 if target is not None and verify_pair(r["reference_answer"], target, timeout_s) == MATCH
                      else 0.0)
    return time.perf_counter() - start, scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-row limit for the throughput part")
    parser.add_argument("--bad", type=int, default=8, help="pathological rows in the timeout part")
    parser.add_argument("--normal", type=int, default=40, help="normal rows in the timeout part")
    parser.add_argument("--bad-timeout", type=float, default=2.0)
    args = parser.parse_args()

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout is disabled" notice
    from distill.verifiers.base import OK, TIMEOUT
    from distill.verifiers.math import MathVerifier, verify_pair

    rows = rows_mixed(args.rows)
    verify_pair("1", "1")  # math-verify and SymPy imported outside the timings
    pool = MathVerifier(workers=args.workers, timeout_s=args.timeout)
    start = time.perf_counter()
    pool.verify_many(rows[:1])
    t_start = time.perf_counter() - start

    t_seq, seq_scores = time_sequential(rows, args.timeout)
    start = time.perf_counter()
    results = pool.verify_many(rows)
    t_pool = time.perf_counter() - start

    agree = sum(s == r.score for s, r in zip(seq_scores, results, strict=True))
    expected = sum((r.score == 1.0) == row["right"] for r, row in zip(results, rows, strict=True))
    n = len(rows)
    print(f"\nrows={n} workers={args.workers} (pool start, outside the timing: {t_start:.2f} s)")
    print(f"{'sequential':<12}{t_seq:8.2f} s {n / t_seq:10.1f} rows/s")
    print(f"{'pool':<12}{t_pool:8.2f} s {n / t_pool:10.1f} rows/s")
    print(f"ratio pool/sequential = {t_seq / t_pool:.2f}   statuses ok = {sum(r.status == OK for r in results)}/{n}"
          f"   pool agrees with sequential on {agree}/{n}, with the generator's truth on {expected}/{n}")

    rng = random.Random(1)
    normal = rows_mixed(args.normal, seed=1)
    bad = [{"id": f"b{i}", "reference_answer": "5",
            "response": response(rng, PATHOLOGICAL[i % len(PATHOLOGICAL)])} for i in range(args.bad)]
    mixed = normal + bad
    random.Random(2).shuffle(mixed)
    verifier = MathVerifier(workers=args.workers, timeout_s=args.bad_timeout)
    start = time.perf_counter()
    results = verifier.verify_many(mixed)
    elapsed = time.perf_counter() - start
    bound = args.bad * args.bad_timeout / args.workers + SLACK_S
    timeouts = sum(r.status == TIMEOUT for r in results)
    print(f"\npathological: {args.bad} of {len(mixed)} rows, timeout {args.bad_timeout:g} s, workers {args.workers}")
    print(f"elapsed {elapsed:.2f} s   bound {args.bad} x {args.bad_timeout:g} / {args.workers} + {SLACK_S:g} = "
          f"{bound:.2f} s   within bound: {'yes' if elapsed <= bound else 'NO'}")
    print(f"over the pathological rows' share ({args.bad * args.bad_timeout / args.workers:.2f} s): "
          f"{elapsed - args.bad * args.bad_timeout / args.workers:.2f} s")
    print(f"statuses: timeout {timeouts}/{args.bad}, ok {sum(r.status == OK for r in results)}/{args.normal}")


if __name__ == "__main__":
    main()
