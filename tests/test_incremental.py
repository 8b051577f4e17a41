"""Incremental cost, from the `runs` table: the bundled sample is processed without 5% of its queries,
then those arrive and the jobs run again. The second run embeds, generates, verifies and scores only for
the new queries (the figures equal what the tables gained for exactly those queries), and the tables end
as a single run over the whole sample leaves them (the session's shared `sample_run`). The time ratio is
bench/bench_incremental.py's job."""

from __future__ import annotations

import json

import pytest

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


def test_new_queries_cost_only_their_own_work(spark, tmp_path, sample_run, capsys):
    lines = (ROOT / "data/sample/queries.jsonl").read_text().splitlines(keepends=True)
    late = [line for line in lines if json.loads(line)["id"] in LATE]
    assert len(late) == len(LATE) == round(len(lines) * 0.05)
    n_new = len(late)
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text("".join(line for line in lines if line not in late))
    new.write_text("".join(late))

    def run_all(warehouse, *inputs):
        from tests.conftest import make_config

        cfg = make_config(tmp_path / warehouse)
        args = ["--conf", str(ROOT / "conf/local.yaml"), *cli_overrides(cfg),
                "--set", f"score.perplexity.model={sample_run.reference}"]
        for path in inputs:
            assert run_cli("ingest", "--input", str(path), *args) == 0
            for job in JOBS:
                assert run_cli(job, *args) == 0, job
        return cfg

    cfg = run_all("incremental", old, new)
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
