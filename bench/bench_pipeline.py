"""The sample pipeline's seconds per job: from an empty warehouse, then two re-runs with no new input.

  .venv/bin/python bench/bench_pipeline.py [--baseline REV] [--runs 1]

Runs the whole pipeline (the embedded default, on the bundled sample) with this checkout's code, and with
`--baseline` also with the code of git revision REV (checked out aside with `git worktree`), alternating
the two so that both see the same machine; every run gets a warehouse of its own. Both use this checkout's
environment (.venv). It prints each job's seconds (from the pipeline's own `done in` lines), the total
wall time including Spark's start, and the ratio baseline / this checkout (machines are noisy: compare
ratios from one sitting). The goals: the first run under 2 minutes, the no-op re-run under 40 s on a quiet
2-core machine. The first re-run still has work: prepare audits the math references against the attempts the
first run made (on an empty warehouse there were none), and report then redraws from the changed
`reference_audit`. The second re-run is the one with nothing to do.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DONE = re.compile(r"^distill: pipeline: (\w+) done in ([\d.]+) s$", re.M)


def run_pipeline(tree: Path, home: Path) -> dict[str, float]:
    """One pipeline run of the code in `tree` over `home`; returns seconds per job and 'total' (wall)."""
    env = {**os.environ, "PYTHONPATH": f"{tree / 'lib'}{os.pathsep}{tree}", "DISTILL_SPARK_LOG_LEVEL": "ERROR"}
    # The tiny reference model (also the students' start) goes in the run's home too: the config's path is relative
    # to the checkout, where an earlier run's model would spare one side of the comparison its building.
    model = home / "out" / "models" / "tiny-reference"
    sets = [f"warehouse={home / 'warehouse'}", f"output_dir={home / 'out'}", "spark.conf.spark.ui.enabled=false",
            f"score.perplexity.model={model}", f"train.student={model}"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(tree / "jobs" / "main.py"), *[a for s in sets for a in ("--set", s)]],
                          cwd=tree, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"pipeline in {tree} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return {**{job: float(s) for job, s in DONE.findall(done.stdout)}, "total": total}


def table(title: str, results: dict[str, list[dict[str, float]]]) -> None:
    labels = list(results)
    jobs = list(results[labels[-1]][0])
    print(f"\n{title} (median seconds of {len(results[labels[-1]])} run(s))")
    print(f"{'job':<10}" + "".join(f"{label:>14}" for label in labels) + ("   ratio" if len(labels) == 2 else ""))
    for job in jobs:
        values = [statistics.median(r.get(job, float("nan")) for r in results[label]) for label in labels]
        ratio = f"{values[0] / values[1]:8.2f}" if len(values) == 2 and values[1] else ""
        print(f"{job:<10}" + "".join(f"{v:14.1f}" for v in values) + ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="a git revision to compare with (e.g. a commit before a change)")
    parser.add_argument("--runs", type=int, default=1, help="pipelines per code version (first run and re-run)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        trees = {}
        if args.baseline:
            base = Path(tmp) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.baseline], cwd=ROOT,
                           check=True)
            trees[f"at {args.baseline[:10]}"] = base
        trees["this checkout"] = ROOT
        first = {label: [] for label in trees}
        rerun = {label: [] for label in trees}
        noop = {label: [] for label in trees}
        try:
            for i in range(args.runs):
                for label, tree in trees.items():
                    home = Path(tmp) / f"{label.replace(' ', '-')}-{i}"
                    first[label].append(run_pipeline(tree, home))
                    rerun[label].append(run_pipeline(tree, home))
                    noop[label].append(run_pipeline(tree, home))
                    print(f"{label}: first run {first[label][-1]['total']:.1f} s, "
                          f"re-run {rerun[label][-1]['total']:.1f} s, "
                          f"second re-run {noop[label][-1]['total']:.1f} s", flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(trees[f"at {args.baseline[:10]}"])],
                               cwd=ROOT)
        table("from an empty warehouse", first)
        table("re-run with no new input (the audit of the first run's attempts)", rerun)
        table("second re-run (nothing to do)", noop)


if __name__ == "__main__":
    main()
