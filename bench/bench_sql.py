"""`./submit.sh sql` cold (its own JVM and Spark session) against warm (a running `./submit.sh serve`),
side by side in one run (machines are noisy: compare ratios). The cold path runs both with the driver's
class archive (lib/distill/jvm.py) and without it (DISTILL_JVM_ARCHIVE=off), alternating.

  .venv/bin/python bench/bench_sql.py [--warehouse DIR] [--runs 3] [--query "SELECT count(*) FROM attempts"]

The warehouse defaults to the embedded default's (run `./submit.sh` once first). It times `--runs` cold
queries, starts `serve` on a free port (its start-up is printed, not counted), times `--runs` warm queries,
checks that both printed the same CSV, and stops the server. The goal: a warm query in about a second.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed_sql(sets: list[str], query: str, env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([str(ROOT / "submit.sh"), "sql", query, "--csv", *sets], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"sql failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", default=None, help="default: the config's (conf/local.yaml)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--query", default="SELECT count(*) FROM attempts")
    args = parser.parse_args()

    from distill.config import load_config
    from distill.serve import state_file

    from tests.conftest import free_port

    sets = ["--set", "spark.conf.spark.ui.enabled=false"]
    if args.warehouse:
        sets += ["--set", f"warehouse={Path(args.warehouse).resolve()}"]
    cfg = load_config(str(ROOT / "conf/local.yaml"), [s for s in sets if s != "--set"])
    state = state_file(cfg)
    if state is None or state.exists():
        sys.exit(f"need a local warehouse with no server running ({state})")

    cold, bare = [], []
    for _ in range(args.runs):
        cold.append(timed_sql(sets, args.query))
        bare.append(timed_sql(sets, args.query, {"DISTILL_JVM_ARCHIVE": "off"}))
    start = time.perf_counter()
    server = subprocess.Popen([str(ROOT / "submit.sh"), "serve", "--port", str(free_port()), *sets], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not state.exists():
            if server.poll() is not None:
                sys.exit("serve exited before it was up")
            time.sleep(0.2)
        up = time.perf_counter() - start
        warm = [timed_sql(sets, args.query) for _ in range(args.runs)]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=120)

    same = len({out for _, out in cold + bare + warm}) == 1
    cold_s, warm_s = statistics.median(t for t, _ in cold), statistics.median(t for t, _ in warm)
    bare_s = statistics.median(t for t, _ in bare)
    print(f"\nquery: {args.query}   runs: {args.runs} each   warehouse: {cfg.warehouse}")
    print(f"cold, no class archive     median {bare_s:6.2f} s   all {', '.join(f'{t:.2f}' for t, _ in bare)}")
    print(f"cold  (own JVM + session)  median {cold_s:6.2f} s   all {', '.join(f'{t:.2f}' for t, _ in cold)}")
    print(f"warm  (running serve)      median {warm_s:6.2f} s   all {', '.join(f'{t:.2f}' for t, _ in warm)}")
    print(f"serve start-up (once)             {up:6.2f} s")
    print(f"ratio cold/warm = {cold_s / warm_s:.1f}x   no archive/archive = {bare_s / cold_s:.2f}x   "
          f"same CSV on every path: {same}")


if __name__ == "__main__":
    main()
