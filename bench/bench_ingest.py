"""Ingest throughput, measured side by side in one run (machines are noisy: compare ratios).

  .venv/bin/python bench/bench_ingest.py [--lines 100000] [--files 4]

Prints, for the same synthetic corpus (90% valid queries, 10% broken lines of several kinds):
  python      the plain-Python parser alone, one process (the floor the Spark job pays on top of)
  ingest      the Spark job end to end: read, parse, dedup by id, two Delta MERGEs, the runs row
  re-ingest   the same input again: every line already present, nothing written but the runs row
and the ratios ingest/python and re-ingest/ingest.
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

CATEGORIES = ["math", "code", "science", "instruction_following", "multi_turn", "general"]


def corpus(path: Path, n_lines: int, n_files: int, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    files = [path / f"part-{i:03d}.jsonl" for i in range(n_files)]
    handles = [f.open("wb") for f in files]
    for i in range(n_lines):
        kind = rng.random()
        if kind < 0.9:
            words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "sum", "prime", "graph"])
                             for _ in range(rng.randint(8, 60)))
            line = json.dumps({"id": f"q{i}", "category": rng.choice(CATEGORIES),
                               "query": f"Question {i}: {words}?", "reference_answer": str(i)}).encode()
        elif kind < 0.94:
            line = b'{"id": "broken'
        elif kind < 0.97:
            line = json.dumps({"id": f"q{i}", "category": "poetry", "query": "?"}).encode()
        else:
            line = b'{"id": "u%d", "category": "math", "query": "\xff\xfe"}' % i
        handles[i % n_files].write(line + b"\n")
    for h in handles:
        h.close()
    return files


def time_python(files: list[Path]) -> float:
    from distill.readers import iter_jsonl
    from distill.records import parse_line

    start = time.perf_counter()
    for f in files:
        for _, raw in iter_jsonl(str(f)):
            parse_line(raw, "bench", 4 * 2**20)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=4)
    args = parser.parse_args()

    from distill.cli import main as cli
    from distill.config import load_config
    from distill.spark import get_spark

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        files = corpus(tmp / "in", args.lines, args.files)
        overrides = [f"warehouse={tmp / 'warehouse'}", "spark.conf.spark.ui.showConsoleProgress=false",
                     "spark.conf.spark.databricks.delta.snapshotPartitions=2"]
        spark = get_spark(load_config(None, overrides))  # started once, outside the timings
        spark.range(1).count()
        set_args = [a for o in overrides for a in ("--set", o)]

        t_python = time_python(files)
        start = time.perf_counter()
        assert cli(["ingest", "--input", str(tmp / "in"), *set_args]) == 0
        t_ingest = time.perf_counter() - start
        start = time.perf_counter()
        assert cli(["ingest", "--input", str(tmp / "in"), *set_args]) == 0
        t_again = time.perf_counter() - start
        steps = [r.timings for r in spark.read.format("delta").load(str(tmp / "warehouse" / "runs"))
                 .orderBy("started_at").collect()]

    n = args.lines
    print(f"\nlines={n} files={args.files} cores={spark.sparkContext.defaultParallelism}")
    print(f"{'python parse':<14}{t_python:8.2f} s {n / t_python:10.0f} lines/s")
    print(f"{'ingest':<14}{t_ingest:8.2f} s {n / t_ingest:10.0f} lines/s")
    print(f"{'re-ingest':<14}{t_again:8.2f} s {n / t_again:10.0f} lines/s")
    print(f"steps (s): ingest {steps[0]}  re-ingest {steps[1]}")
    print(f"ratio ingest/python = {t_ingest / t_python:.2f}   ratio re-ingest/ingest = {t_again / t_ingest:.2f}")


if __name__ == "__main__":
    main()
