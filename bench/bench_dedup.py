"""Exact + MinHash near-dedup on synthetic queries with planted duplicates, measured side by side:
distill's Spark stages (`exact_duplicates`, `near_duplicates`) vs datasketch's MinHashLSH run in one
process on the same texts and the same word-bigram shingles.

  .venv/bin/python bench/bench_dedup.py [--n 200000] [--planted 5000]

Prints recall and precision on the planted pairs for both, and the time ratio spark/datasketch.
A planted pair is an original and a copy with one word changed, or with case and spacing changed
(an exact duplicate after normalization). A predicted pair counts as correct when it is planted.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def corpus(n: int, planted: int, seed: int = 0):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    base = [" ".join(rng.choice(vocab) for _ in range(rng.randint(15, 30))) for _ in range(n - planted)]
    rows = [(f"q{i:07d}", t) for i, t in enumerate(base)]
    truth = set()
    for j in range(planted):
        src = rng.randrange(len(base))
        words = base[src].split()
        if j % 2:  # one word changed: a near-duplicate
            words[rng.randrange(len(words))] = rng.choice(vocab)
            text = " ".join(words)
        else:  # case and spacing: an exact duplicate after normalization
            text = "  ".join(words).upper()
        rows.append((f"p{j:07d}", text))
        truth.add((f"p{j:07d}", f"q{src:07d}"))
    return rows, truth


def score(pred: set, truth: set) -> tuple[float, float]:
    hit = len(pred & truth)
    return hit / len(truth), (hit / len(pred) if pred else 1.0)


def run_datasketch(rows, threshold: float, k: int):
    from datasketch import MinHash, MinHashLSH
    from distill.textsig import shingles, text_hash

    lsh, seen_exact, pred = MinHashLSH(threshold=threshold, num_perm=128), {}, set()
    for qid, text in rows:  # rows are in survivor order: originals first
        h = text_hash(text)
        if h in seen_exact:
            pred.add((qid, seen_exact[h]))
            continue
        seen_exact[h] = qid
        m = MinHash(num_perm=128)
        for s in shingles(text, k):
            m.update(s.encode())
        hits = lsh.query(m)
        if hits:
            pred.add((qid, min(hits)))
        lsh.insert(qid, m)
    return pred


def run_spark(spark, rows, cfg):
    from distill.stages.prepare import exact_duplicates, near_duplicates, survivor_order
    from distill.textsig import text_hash
    from pyspark.sql import functions as F

    df = spark.createDataFrame([(q, t, text_hash(t), i) for i, (q, t) in enumerate(rows)],
                               "query_id string, text string, norm_hash string, source_line long")
    df = survivor_order(df.withColumn("settled", F.lit(False)).withColumn("ingested_at", F.current_timestamp())
                        .withColumn("source_file", F.lit("f"))).persist()
    df.count()
    start = time.perf_counter()
    dups = exact_duplicates(df).persist()
    exact = {(r.query_id, r.duplicate_of) for r in dups.collect()}
    remaining = df.join(dups, "query_id", "left_anti")
    near = {(r.query_id, r.near_duplicate_of) for r in near_duplicates(remaining, remaining, cfg).collect()}
    return exact | near, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--planted", type=int, default=5_000)
    args = parser.parse_args()

    from distill.config import DedupConfig, load_config
    from distill.spark import get_spark

    cfg = DedupConfig()
    rows, truth = corpus(args.n, args.planted)
    spark = get_spark(load_config(None, ["spark.conf.spark.ui.showConsoleProgress=false"]))

    start = time.perf_counter()
    ds_pred = run_datasketch(rows, cfg.near_threshold, cfg.shingle_words)
    t_ds = time.perf_counter() - start
    sp_pred, t_sp = run_spark(spark, rows, cfg)

    print(f"\n{args.n} queries, {len(truth)} planted pairs, threshold {cfg.near_threshold}, "
          f"{cfg.shingle_words}-word shingles, {spark.sparkContext.defaultParallelism} cores")
    for name, pred, took in (("datasketch (1 process)", ds_pred, t_ds), ("distill spark", sp_pred, t_sp)):
        recall, precision = score(pred, truth)
        print(f"  {name:<24} {took:8.1f} s  recall {recall:.4f}  precision {precision:.4f}  ({len(pred)} pairs)")
    print(f"  time ratio spark/datasketch = {t_sp / t_ds:.2f}")


if __name__ == "__main__":
    main()
