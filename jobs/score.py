"""score: put every (query, teacher) pair's first accepted response into `sft` and score it.

1. `sft` mirrors the ledger: one row per pair with an accepted attempt (new pairs inserted, a pair whose first
   accepted attempt changed rewritten, a pair no longer accepted removed).
2. Per-response scores (structure, in-response repetition, student-token count, perplexity under the reference
   model) for rows without current scores: a response is scored once per score_key (model, tokenizer, n,
   scorer versions) into `attempt_scores` (distill.scoring), and copied from there into `sft`, so a re-run, or
   an attempt an experiment scored before, costs no scoring.
3. Corpus n-gram counts for each teacher whose set of responses changed since its counts were made.
Scores are columns; nothing is dropped here. `curate` decides from them.
"""

from __future__ import annotations

import sys

from distill.faults import crash_point
from distill.scoring import score_spec, scores_of
from distill.settled import Settled
from distill.spark import remove_path
from distill.stages import score as st
from distill.tables import ensure_table, merge_mirror, merge_update, read_table, stage, table_path
from pyspark.sql import functions as F

HELP = "score accepted responses: perplexity, n-gram redundancy, structure (`sft` table)"


def add_arguments(parser) -> None:
    pass


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    for name in ("queries", "attempts"):
        if not DeltaTable.isDeltaTable(spark, table_path(cfg, name)):
            raise SystemExit(f"score: no `{name}` table yet; run generate first")
    with rec.step("reference_model"):
        spec = score_spec(spark, cfg)
    state = Settled(spark, cfg, rec, ("queries", "attempts", "sft", "attempt_scores"))
    if state.unchanged(spec.key()):
        return
    ensure_table(spark, cfg, "sft")
    read = lambda name: read_table(spark, cfg, name)  # noqa: E731

    with rec.step("select"):
        chosen = st.candidates(read("attempts"), read("queries")).withColumn("run_id", F.lit(rec.run_id)) \
            .withColumn("added_at", F.current_timestamp())
        m = merge_mirror(spark, cfg, "sft", chosen, "t.attempt <> s.attempt OR t.response <> s.response")
        rec.wrote("sft", m["version"])
        for what, metric in (("inserted", "numTargetRowsInserted"), ("replaced", "numTargetRowsUpdated"),
                             ("removed", "numTargetRowsDeleted")):
            rec.count(f"sft.{what}", m.get(metric, 0))
    crash_point("score.selected")

    key = spec.key()
    with rec.step("score"):
        todo = read("sft").where(F.col("score_key").isNull() | (F.col("score_key") != key))
        scores, stats, total = scores_of(spark, cfg, rec, todo, spec)
        if total:  # scores made now or earlier (by an experiment, or before a crash) into `sft`
            rec.wrote("sft", merge_update(spark, cfg, "sft", scores,
                                          [*st.SCORE_COLUMNS, "score_key", "scored_at"])["version"])
    for s in stats:
        rec.count(f"{s['teacher']}.scored", s["rows"])
        rec.count(f"{s['teacher']}.ppl_tokens", s["tokens"] or 0)
        if s["errors"] and spec.perplexity is not None:
            rec.count(f"{s['teacher']}.ppl_errors", s["errors"])
            print(f"score: {s['teacher']}: {s['errors']} responses without a perplexity; first: {s['first_error']}",
                  file=sys.stderr)
    crash_point("score.scored")

    with rec.step("corpus_ngrams"):
        _corpus(spark, cfg, rec, read("sft"))
    state.settle()  # every accepted response is in `sft` and scored (a perplexity error is kept, not retried)
    _summarize(read("sft"))


def _corpus(spark, cfg, rec, sft) -> None:
    """Recount n-grams across each teacher whose responses changed (their corpus_key differs)."""
    n = cfg.score.ngram_n
    keys = st.corpus_keys(sft, n)
    stale = [r["teacher"] for r in sft.join(keys.withColumnRenamed("corpus_key", "current"), "teacher").where(
        F.col("corpus_key").isNull() | (F.col("corpus_key") != F.col("current"))).select("teacher").distinct()
        .collect()]
    if not stale:
        return
    rows = sft.where(F.col("teacher").isin(stale))
    partitions = st.corpus_partitions(rows.count(), int(spark.conf.get("spark.sql.shuffle.partitions")))
    counted = st.corpus_max(rows, n, partitions).join(keys, "teacher")
    staged, path = stage(spark, cfg, counted, "corpus")
    rec.wrote("sft", merge_update(spark, cfg, "sft", staged, ["ngram_corpus_max", "corpus_key"])["version"])
    for r in staged.groupBy("teacher").count().collect():
        rec.count(f"{r['teacher']}.corpus_rows", r["count"])
    remove_path(spark, path)


def _summarize(sft) -> None:
    for r in sft.groupBy("teacher").agg(F.count("*").alias("rows"), F.avg("ppl").alias("ppl"),
                                        F.avg("n_tokens").alias("tokens"),
                                        F.sum((~F.col("structure_ok")).cast("int")).alias("bad_structure")
                                        ).orderBy("teacher").collect():
        ppl = "n/a" if r["ppl"] is None else f"{r['ppl']:.2f}"
        tokens = "n/a" if r["tokens"] is None else f"{r['tokens']:.0f}"
        print(f"score: {r['teacher']}: {r['rows']} responses, mean perplexity {ppl}, mean {tokens} tokens, "
              f"{r['bad_structure'] or 0} with broken structure")
