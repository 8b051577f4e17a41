"""Incremental cost, from the `runs` table: the tables hold the bundled sample without 5% of its
queries (the shared run's tables, those queries' rows taken out), then those arrive and the jobs run again.
The second run embeds, generates, verifies and scores only for the new queries (the figures equal what the
tables gained for exactly those queries), and the tables end as a single run over the whole sample leaves
them (the session's shared `sample_run`). The time ratio is bench/bench_incremental.py's job."""

from __future__ import annotations

import json

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from tests.conftest import ROOT, cli_overrides, run_cli

pytestmark = pytest.mark.slow

JOBS = ("prepare", "generate", "score", "curate")
# The 5% that arrive later: a math, a code and an instruction-following query that no other sample query
# duplicates (a late original would lose to its earlier-ingested duplicate, by design: runs differ there).
LATE = ("math-012", "code-010", "if-008")


def last_counts(spark, job: str) -> dict:
    row = spark.sql(f"SELECT counts FROM runs WHERE job = '{job}' AND status = 'succeeded' "
                    "ORDER BY started_at DESC LIMIT 1").first()
    return dict(row["counts"])


def teacher_sum(counts: dict, suffix: str) -> int:
    return sum(v for k, v in counts.items() if k.startswith("teacher-") and k.endswith(f".{suffix}"))


def snapshot(spark, warehouse) -> dict:
    """The tables' content that does not depend on when or in how many runs it was made."""
    q = "SELECT query_id, status, drop_reason FROM queries"
    a = ("SELECT query_id, teacher, attempt, response, verify_status, verify_score, accepted FROM attempts")
    s = ("SELECT query_id, teacher, attempt, n_tokens, round(ppl, 3), structure_ok, ngram_max_repeat, "
         "ngram_corpus_max, keep, reject_reason FROM sft")
    from distill.config import load_config
    from distill.tables import register_tables

    register_tables(spark, load_config(None, [f"warehouse={warehouse}"]))
    return {name: sorted(tuple(r) for r in spark.sql(sql).collect()) for name, sql in
            (("queries", q), ("attempts", a), ("sft", s),
             ("decontam_matches", "SELECT query_id, benchmark, item_id, method FROM decontam_matches"))}


def without_late(spark, sample_run, home):
    """A copy of the shared run's tables after curate, less every row the LATE queries left in them (their
    embeddings too): where a run over the sample without them would have left the tables. One thing differs,
    and does not matter: the old responses' corpus n-gram counts still include the late ones, but the corpus
    key changes with the rows removed, so `score` recounts every teacher on the next run, as it would."""
    from distill.stages import prepare as st

    tables = ("queries", "ingest_files", "decontam_matches", "embeddings", "attempts", "sft")
    sample_run.copy(home, tables)
    path = {t: str(home / "warehouse" / t) for t in tables}
    late = spark.read.format("delta").load(path["queries"]).where(F.col("source_id").isin(*LATE))
    ids = [r.query_id for r in late.select("query_id").collect()]
    hashes = [r.h for r in st.with_text(late).select(st.exact_text_hash(F.col("text")).alias("h")).collect()]
    assert len(ids) == len(LATE)
    for t in ("queries", "decontam_matches", "attempts", "sft"):
        DeltaTable.forPath(spark, path[t]).delete(F.col("query_id").isin(*ids))
    gone = DeltaTable.forPath(spark, path["embeddings"]).toDF().where(F.col("text_hash").isin(*hashes)).count()
    DeltaTable.forPath(spark, path["embeddings"]).delete(F.col("text_hash").isin(*hashes))
    assert gone == len(LATE)  # each late text was embedded, and is not any more


def test_new_queries_cost_only_their_own_work(spark, tmp_path, sample_run, capsys):
    lines = (ROOT / "data/sample/queries.jsonl").read_text().splitlines(keepends=True)
    late = [line for line in lines if json.loads(line)["id"] in LATE]
    assert len(late) == len(LATE) == round(len(lines) * 0.05)
    n_new = len(late)
    new = tmp_path / "new.jsonl"
    new.write_text("".join(late))

    from tests.conftest import make_config

    home = tmp_path / "incremental"
    without_late(spark, sample_run, home)
    cfg = make_config(home)
    args = ["--conf", str(ROOT / "conf/local.yaml"), *cli_overrides(cfg),
            "--set", f"score.perplexity.model={sample_run.reference}"]
    assert run_cli("ingest", "--input", str(new), *args) == 0
    for job in JOBS:
        assert run_cli(job, *args) == 0, job
    capsys.readouterr()
    added = {r.query_id for r in spark.sql("SELECT query_id FROM queries WHERE ingest_run_id = "
                                           "(SELECT max_by(run_id, started_at) FROM runs WHERE job = 'ingest')")
             .collect()}
    assert len(added) == n_new
    ids = ", ".join(f"'{q}'" for q in added)

    prepare = last_counts(spark, "prepare")
    assert prepare["todo"] == n_new  # only the new queries were judged
    passed = spark.sql(f"SELECT count(*) FROM queries WHERE query_id IN ({ids}) "
                       "AND coalesce(drop_reason, '') NOT LIKE 'filter:%'").first()[0]
    assert prepare.get("embedded", 0) == passed  # their texts only: the benchmark's and the old ones are cached

    generate = last_counts(spark, "generate")
    new_attempts = spark.sql(f"SELECT count(*) FROM attempts WHERE query_id IN ({ids})").first()[0]
    assert teacher_sum(generate, "generated") == new_attempts > 0
    assert generate.get("verified", 0) == 0  # nothing stored was verified again

    score = last_counts(spark, "score")
    new_sft = spark.sql(f"SELECT count(*) FROM sft WHERE query_id IN ({ids})").first()[0]
    assert teacher_sum(score, "scored") == new_sft == score.get("sft.inserted", 0)
    assert score.get("sft.replaced", 0) == 0 and score.get("sft.removed", 0) == 0
    assert snapshot(spark, cfg.warehouse) == snapshot(spark, sample_run.warehouse)
