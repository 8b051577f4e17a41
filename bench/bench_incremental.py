"""Incremental cost: what a re-run costs when 5% new queries arrive, measured side by side in one run
(machines are noisy: compare ratios).

  .venv/bin/python bench/bench_incremental.py [--queries 2000] [--new 0.05]

A synthetic corpus (math word problems with replay teachers: most answers right the first time, some only
at the second attempt; a tenth are `general` queries without a verifier) goes through ingest, prepare
(filters, the embedder, decontamination, dedup), generate (replay + math-verify), score (a random tiny
reference model) and curate, all in one Spark session, three times:
  full         the corpus without its last 5% and one more query;
  one new      that one query arrives: every job runs with almost nothing to do but still loads what work
               needs (the embedder, the verifier pools, the reference model) and runs its Spark jobs and
               Delta commits: the fixed start-up;
  incremental  the last 5% arrive: ingest them and run every job again;
  no-op        the same 5% ingested again (already there): every job finds nothing to do (no model loads).
It prints per-job seconds and the work counts from `runs`, then incremental / full and
(incremental - one new) / full: the cost that grows with the new queries. The goal: at most 0.10.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JOBS = ("ingest", "prepare", "generate", "score", "curate")
WORDS = ("apples", "marbles", "coins", "stamps", "books", "pencils", "shells", "cards")


def corpus(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(queries, replay rows): attempt 1 right for 85% of the math queries, wrong then right for the rest."""
    rng = random.Random(seed)
    queries, replies = [], []
    for i in range(n):
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 999)
        thing, name = WORDS[i % len(WORDS)], f"Person{i}"
        if i % 10 == 9:
            q = {"id": f"g{i}", "category": "general",
                 "query": f"{name} collects {thing}. Describe, in two sentences, a good way to sort {a} of them."}
            replies.append(_reply(q["id"], 1, f"Group the {thing} by size first.", f"Sort {a} {thing} in rows."))
        else:
            q = {"id": f"m{i}", "category": "math", "reference_answer": str(a * b + c),
                 "query": f"{name} has {a} boxes with {b} {thing} each and finds {c} more. How many {thing} "
                          f"does {name} have now?"}
            steps = f"{a} boxes of {b} is {a * b}. Adding {c} gives {a * b + c}."
            if i % 7 == 3:  # wrong first
                replies.append(_reply(q["id"], 1, steps.replace(str(a * b + c), str(a * b + c + 1)),
                                      f"\\boxed{{{a * b + c + 1}}}"))
                replies.append(_reply(q["id"], 2, steps, f"\\boxed{{{a * b + c}}}"))
            else:
                replies.append(_reply(q["id"], 1, steps, f"\\boxed{{{a * b + c}}}"))
        queries.append({"source": "bench", **q})
    return queries, replies


def _reply(qid: str, attempt: int, think: str, answer: str) -> dict:
    return {"source": "bench", "id": qid, "attempt": attempt,
            "response": f"<think>\n{think} Let me check the arithmetic once more. {think}\n</think>\n"
                        f"<answer>\n{answer}\n</answer>"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_jobs(args: list[str], ingest: Path) -> dict[str, float]:
    from distill.cli import main

    times = {}
    for job in JOBS:
        start = time.perf_counter()
        extra = ["--input", str(ingest)] if job == "ingest" else []
        assert main([job, *extra, *args]) == 0, job
        times[job] = time.perf_counter() - start
    return times


def work_counts(spark) -> dict[str, int]:
    """The work the latest run of each job did, from `runs`."""
    out = {}
    for job, keys in (("prepare", ("todo", "embedded")), ("generate", ("generated", "verified")),
                      ("score", ("scored", "corpus_rows"))):
        counts = spark.sql(f"SELECT counts FROM runs WHERE job = '{job}' ORDER BY started_at DESC LIMIT 1"
                           ).first()["counts"]
        for key in keys:
            out[f"{job}.{key}"] = sum(v for k, v in counts.items() if k == key or k.endswith(f".{key}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--new", type=float, default=0.05)
    opts = parser.parse_args()

    from distill.config import load_config
    from distill.spark import get_spark
    from distill.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    queries, replies = corpus(opts.queries)
    n_new = max(1, round(opts.queries * opts.new))
    # the one new query is a math one (kept, generated, verified and scored: it loads every model); the
    # templated `general` queries are mostly near-duplicates of each other and dropped
    first = next(i for i in range(len(queries) - n_new - 1, 0, -1) if queries[i]["category"] == "math")
    old = write_jsonl(work / "old.jsonl", queries[:first] + queries[first + 1:-n_new])
    one = write_jsonl(work / "one.jsonl", [queries[first]])
    new = write_jsonl(work / "new.jsonl", queries[-n_new:])
    replay = write_jsonl(work / "teacher.jsonl", replies)
    model = build_tiny_model(work / "reference", [r["response"] for r in replies[:500]])
    settings = ["spark.master=local[2]", "spark.conf.spark.ui.enabled=false",
                "spark.conf.spark.ui.showConsoleProgress=false", "spark.conf.spark.sql.shuffle.partitions=4",
                f"warehouse={work}/warehouse", f"output_dir={work}/out"]
    args = ["--conf", str(ROOT / "conf/local.yaml"), *[x for s in settings for x in ("--set", s)],
            "--set", f"teachers=[{{name: teacher-a, engine: replay, model: '{replay}'}}]",
            "--set", f"score.perplexity.model={model}", "--set", "score.perplexity.build_tiny_from=[]"]
    spark = get_spark(load_config(str(ROOT / "conf/local.yaml"), settings))

    results = {}
    for name, ingest in (("full", old), ("one new", one), ("incremental", new), ("no-op", new)):
        times = run_jobs(args, ingest)
        results[name] = (times, work_counts(spark))

    print(f"\n{opts.queries} queries: full run over {opts.queries - n_new - 1}, then 1 new, then {n_new} new "
          f"({opts.new:.0%}), then nothing new")
    print(f"{'job':<10}" + "".join(f"{n:>14}" for n in results))
    for job in JOBS:
        print(f"{job:<10}" + "".join(f"{r[0].get(job, 0.0):>13.1f}s" for r in results.values()))
    totals = {n: sum(r[0].values()) for n, r in results.items()}
    print(f"{'total':<10}" + "".join(f"{t:>13.1f}s" for t in totals.values()))
    print("\nwork done (from runs):")
    for key in results["full"][1]:
        print(f"  {key:<22}" + "".join(f"{r[1][key]:>10}" for r in results.values()))
    full, one, inc, noop = (totals[n] for n in ("full", "one new", "incremental", "no-op"))
    print(f"\nincremental / full              = {inc / full:.3f}")
    print(f"one new / full (fixed start-up)  = {one / full:.3f}   (no-op / full = {noop / full:.3f})")
    print(f"(incremental - one new) / full   = {(inc - one) / full:.3f}   (goal <= 0.10)")
    spark.stop()


if __name__ == "__main__":
    main()
