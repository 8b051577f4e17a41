"""Per-test overhead of the code sandbox, measured side by side in one run (machines are noisy: compare ratios).

  .venv/bin/python bench/bench_sandbox.py [--runs 30]

Runs the same small Python test program (read numbers on stdin, print their sum) over and over, the
variants interleaved so that drift in machine load hits them alike:
  bare        subprocess.run([python, "-I", file]) with stdin piped and output captured
  sandbox     run_sandboxed([python, "-I", "main.py"]): namespaces, read-only mounts, scratch tmpfs, uid drop
and the same pair under `-I -S`, which is how the code verifier starts Python. Prints median and mean
wall time per run, runs per second, and the ratio sandbox/bare: the goal is at most 1.5x under `-I -S`.
The first sandboxed run of a process starts its fork server; the warm-up runs pay for that.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

PROGRAM = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"
STDIN = " ".join(str(i) for i in range(1000)) + "\n"
EXPECTED = str(sum(range(1000)))


def time_bare(argv: list[str]) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, input=STDIN, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert out.stdout.strip() == EXPECTED, out
    return elapsed


def time_sandbox(argv: list[str]) -> float:
    from distill.verifiers.sandbox import run_sandboxed

    start = time.perf_counter()
    res = run_sandboxed(argv, files={"main.py": PROGRAM}, stdin=STDIN)
    elapsed = time.perf_counter() - start
    assert res.error is None and res.stdout.strip() == EXPECTED, res
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    from distill.verifiers.sandbox import sandbox_available

    reason = sandbox_available()
    if reason:
        sys.exit(f"no sandbox on this machine: {reason}")

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "main.py"
        script.write_text(PROGRAM)
        variants = {}
        for flags in (["-I"], ["-I", "-S"]):
            label = " ".join(flags)
            variants[f"bare {label}"] = lambda f=flags: time_bare([sys.executable, *f, str(script)])
            variants[f"sandbox {label}"] = lambda f=flags: time_sandbox([sys.executable, *f, "main.py"])
        for run in variants.values():  # warm the page cache and the interpreter's imports
            run()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.runs):
            for name, run in variants.items():
                times[name].append(run())

    print(f"\nruns={args.runs} python={sys.executable}")
    print(f"{'variant':<16}{'median ms':>12}{'mean ms':>12}{'min ms':>10}{'max ms':>10}{'runs/s':>10}")
    for name, ts in times.items():
        print(f"{name:<16}{statistics.median(ts) * 1e3:12.1f}{statistics.mean(ts) * 1e3:12.1f}"
              f"{min(ts) * 1e3:10.1f}{max(ts) * 1e3:10.1f}{len(ts) / sum(ts):10.1f}")
    for label in ("-I", "-I -S"):
        bare, boxed = times[f"bare {label}"], times[f"sandbox {label}"]
        print(f"ratio sandbox/bare ({label}): median {statistics.median(boxed) / statistics.median(bare):.2f}"
              f"   mean {statistics.mean(boxed) / statistics.mean(bare):.2f}"
              f"   overhead {(statistics.median(boxed) - statistics.median(bare)) * 1e3:.1f} ms/run")


if __name__ == "__main__":
    main()
