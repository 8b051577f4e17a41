"""Experiment stages: a variant's dataset from the ledger and the stored scores, and its figures.
DataFrame -> DataFrame; distill.experiments reads and writes the tables.

A variant's dataset is made as the pipeline makes `sft`, with the variant's settings:
  1. select: per (query, teacher) of its teachers, the first attempt at or above its threshold;
  2. scores: each chosen attempt's per-response scores (`attempt_scores`);
  3. corpus n-grams: counted over the variant's own selection, per teacher, exactly as `score` counts a
     teacher's `sft` rows (a variant at another threshold has another corpus, so its counts are its own);
  4. curate: distill.stages.curate.decide with the variant's curate settings;
  5. subsample (optional): `size` rows, as-is (a seeded random sample) or uniform over the length buckets.
"""

from __future__ import annotations

import math

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distill.config import CurateConfig, SubsampleConfig
from distill.stages import generate as gen
from distill.stages import report as rep
from distill.stages import score as sc
from distill.stages.curate import decide

KEYS = ["query_id", "teacher", "attempt"]


def select(attempts: DataFrame, queries: DataFrame, teachers: list[str], threshold: float,
           accept_no_verifier: bool) -> DataFrame:
    """The first attempt of each pair of `teachers` that passes at `threshold` (the `sft` candidates' shape)."""
    mine = attempts.where(F.col("teacher").isin(teachers))
    return sc.candidates(mine, queries, gen.accepted_at(threshold, accept_no_verifier))


def curated(selected: DataFrame, scores: DataFrame, curate: CurateConfig, ngram_n: int) -> DataFrame:
    """The selection with its scores, its own corpus n-gram counts and curate's decision: rows with
    `keep` and `reject_reason` (every row is scored, so none is pending)."""
    rows = selected.join(scores, KEYS)
    corpus = sc.corpus_max(rows.select("teacher", "query_id", "response"), ngram_n)
    decided = decide(rows.join(corpus, ["teacher", "query_id"]), curate)
    return (decided.drop("keep", "reject_reason").withColumnRenamed("decided_keep", "keep")
            .withColumnRenamed("decided_reason", "reject_reason"))


def subsample(kept: DataFrame, s: SubsampleConfig, buckets: list[tuple[int, int]]) -> DataFrame:
    """`s.size` rows of `kept`. as_is: the first by a seeded hash (a random sample with the selection's
    length profile). uniform: the same order inside each chosen length bucket, `size / k` rows from each of
    the k buckets (`uniform_buckets`), the first `size mod k` buckets one more."""
    order = F.xxhash64(F.lit(s.seed), "query_id", "teacher")
    if s.length == "as_is":
        return kept.orderBy(order, "query_id", "teacher").limit(s.size)
    k = len(buckets)
    share = {b: s.size // k + (1 if i < s.size % k else 0) for i, (b, _) in enumerate(buckets)}
    quota = F.create_map(*[x for b, n in share.items() for x in (F.lit(b), F.lit(n))])
    from pyspark.sql.window import Window

    rank = F.row_number().over(Window.partitionBy("length_bin").orderBy(order, "query_id", "teacher"))
    with_bin = kept.withColumn("length_bin", rep.log2_bin(rep.length(kept)))
    return (with_bin.where(F.col("length_bin").isin(list(share))).withColumn("rank", rank)
            .where(F.col("rank") <= F.element_at(quota, F.col("length_bin"))).drop("rank", "length_bin"))


def bucket_counts(kept: DataFrame) -> list[tuple[int, int]]:
    """(log2 length bin, rows) of `kept`, most rows first (ties: the shorter bin)."""
    rows = kept.groupBy(rep.log2_bin(rep.length(kept)).alias("b")).count().collect()
    return sorted(((r["b"], r["count"]) for r in rows), key=lambda x: (-x[1], x[0]))


def uniform_buckets(counts: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The most length buckets that can each give an equal share (size / k, rounded up) of `size` rows:
    buckets too sparse for their share are left out, so the sample stays flat at the asked size. Empty when
    even one bucket cannot give `size` rows."""
    for k in range(len(counts), 0, -1):
        top = counts[:k]
        if all(n >= -(-size // k) for _, n in top):
            return top
    return []


def figures(rows: DataFrame) -> dict:
    """rows, tokens, mean_length, length_entropy, mean_ppl of a dataset. length_entropy: the normalized
    entropy of its log2-length histogram over the report's scale (the bins from 2^0 to 2^16 tokens: the same
    scale for every dataset, so two datasets compare), 0 when every row is in one bin."""
    length = rep.length(rows)
    agg = rows.agg(F.count("*").alias("rows"), F.sum(length).alias("tokens"), F.avg(length).alias("mean_length"),
                   F.avg("ppl").alias("mean_ppl")).first()
    bins = [r["count"] for r in rows.groupBy(rep.log2_bin(length)).count().collect()]
    total = sum(bins)
    entropy = -sum(n / total * math.log(n / total) for n in bins) / math.log(ENTROPY_BINS) if total else None
    return {"rows": agg["rows"], "tokens": agg["tokens"] or 0, "mean_length": agg["mean_length"],
            "length_entropy": None if entropy is None else max(0.0, entropy), "mean_ppl": agg["mean_ppl"]}


ENTROPY_BINS = 17  # log2 bins 0..16: lengths up to 128k tokens
