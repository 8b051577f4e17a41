"""The experiment job on a copy of the shared sample run: a threshold sweep whose dataset sizes match a count
made by hand from `attempts`, a variant above the ledger's threshold that generates exactly the attempts it
lacks, a uniform length subsample, shared students, and a re-run that costs only what is new. (An as-is subsample is
checked on a small DataFrame below.)"""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, cli_overrides, make_config, run_cli

# every curate rule off: a threshold variant's dataset is then exactly its selection
NO_RULES = "{require_structure: false, max_tokens: null, repeat_max_count: null, corpus_max_count: null}"
VARIANTS = [
    f"{{name: b-0.5, teachers: [teacher-b], threshold: 0.5, curate: {NO_RULES}}}",
    f"{{name: b-0.9, teachers: [teacher-b], curate: {NO_RULES}}}",
    f"{{name: b-0.9-again, teachers: [teacher-b], curate: {NO_RULES}}}",  # same recipe: the same student
    f"{{name: a-1.0, teachers: [teacher-a], threshold: 1.0, curate: {NO_RULES}}}",
    "{name: a-uniform, teachers: [teacher-a], subsample: {size: 12, length: uniform}}",
]
ADDED = f"{{name: c-0.9, teachers: [teacher-c], curate: {NO_RULES}}}"


def _counts(spark) -> dict:
    row = spark.sql("SELECT counts FROM runs WHERE job = 'experiment' ORDER BY started_at DESC LIMIT 1").first()
    return {k: row["counts"].get(k, 0) for k in ("generated", "scored", "trained", "evaluated")}


def _by_hand(spark, teacher: str, threshold: float) -> set:
    """(query_id, teacher, attempt) of each pair's first attempt passing at `threshold` (the sample accepts
    unverifiable responses), from `attempts` alone."""
    return {tuple(r) for r in spark.sql(f"""
        SELECT query_id, teacher, min(attempt) FROM attempts
        WHERE teacher = '{teacher}' AND ((verify_status = 'ok' AND verify_score >= {threshold})
                                         OR verify_status = 'no_verifier')
        GROUP BY query_id, teacher""").collect()}


def _rows(spark, variant: str) -> set:
    return {tuple(r) for r in spark.sql(f"""
        SELECT r.query_id, r.teacher, r.attempt FROM experiment_rows r JOIN experiments e USING (dataset_key)
        WHERE e.experiment = 'x' AND e.variant = '{variant}'""").collect()}


@pytest.mark.slow
def test_an_experiment_makes_its_datasets_students_and_scores_once(spark, sample_run, tmp_path, capsys):
    from distill.tables import register_tables

    home = sample_run.copy(tmp_path / "home")
    cfg = make_config(home)
    register_tables(spark, cfg)
    # As if teacher-a's ledger held first attempts only: a variant above generate.threshold must ask again.
    missing = {tuple(r) for r in spark.sql(
        "SELECT query_id, teacher, attempt FROM attempts WHERE teacher = 'teacher-a' AND attempt >= 2").collect()}
    assert missing
    spark.sql("DELETE FROM attempts WHERE teacher = 'teacher-a' AND attempt >= 2")
    sft_keys = {tuple(r) for r in spark.sql("SELECT query_id, teacher, attempt FROM sft").collect()}

    def run(*variants: str) -> None:
        args = ["--conf", str(ROOT / "conf/local.yaml"), *cli_overrides(cfg),
                "--set", f"score.perplexity.model={sample_run.reference}",
                "--set", f"train.student={sample_run.reference}",
                "--set", "evaluate.benchmarks.0.samples=1", "--set", "evaluate.benchmarks.1.samples=1",
                "--set", f"experiments=[{{name: x, variants: [{', '.join(variants)}]}}]"]
        assert run_cli("experiment", *args) == 0
        register_tables(spark, cfg)

    run(*VARIANTS)
    out = capsys.readouterr().out
    assert f"threshold 1 (above generate.threshold 0.9): pairs without an attempt at or above it that can get one: " \
           f"teacher-a {len(missing)}" in out  # said before it starts
    counts = _counts(spark)
    run_id = spark.sql("SELECT run_id FROM runs WHERE job = 'experiment'").first()[0]
    regenerated = {tuple(r) for r in spark.sql(
        f"SELECT query_id, teacher, attempt FROM attempts WHERE run_id = '{run_id}'").collect()}
    assert regenerated == missing and counts["generated"] == len(missing)  # exactly the missing attempts

    # the threshold sweep: each dataset is each pair's first attempt at or above the threshold
    for variant, teacher, threshold in (("b-0.5", "teacher-b", 0.5), ("b-0.9", "teacher-b", 0.9),
                                        ("a-1.0", "teacher-a", 1.0)):
        assert _rows(spark, variant) == _by_hand(spark, teacher, threshold), variant
    assert len(_rows(spark, "b-0.5")) > len(_rows(spark, "b-0.9"))  # a lower bar accepts more pairs
    chosen = _rows(spark, "b-0.5") | _rows(spark, "b-0.9") | _rows(spark, "a-1.0") | _rows(spark, "a-uniform")
    assert counts["scored"] == len(chosen - sft_keys)  # what `score` scored for sft is not scored again

    # the subsamples: the asked size; uniform: equal shares of the length buckets it uses, within one row
    shares = {r["b"]: r["n"] for r in spark.sql("""
        SELECT floor(log2(r.n_tokens)) b, count(*) n FROM experiment_rows r JOIN experiments e USING (dataset_key)
        WHERE e.variant = 'a-uniform' GROUP BY 1""").collect()}
    assert sum(shares.values()) == 12 and max(shares.values()) - min(shares.values()) <= 1 and len(shares) > 1

    lineage = {r["variant"]: r.asDict() for r in spark.sql("SELECT * FROM experiments").collect()}
    assert lineage["b-0.9"]["student"] == lineage["b-0.9-again"]["student"]
    assert len({x["student"] for x in lineage.values()}) == 4 == counts["trained"]
    assert json.loads(lineage["b-0.5"]["recipe"])["threshold"] == 0.5
    results = spark.sql("SELECT * FROM experiment_results").collect()
    assert {(r["variant"], r["benchmark"]) for r in results} == {
        (v, b) for v in lineage for b in ("sample-math", "sample-code")}
    assert all(r["complete"] and r["pass_at_1"] is not None and r["rows"] == lineage[r["variant"]]["dataset_rows"]
               for r in results)
    # a score traces back to its samples with SQL
    samples = spark.sql("""SELECT count(*) FROM experiment_results r JOIN eval_samples s
                           ON s.student = r.student AND s.benchmark = r.benchmark
                           WHERE r.variant = 'b-0.9'""").first()[0]
    assert samples == counts["evaluated"] // 4 > 0

    # One variant more: only it costs anything (the others' attempts, scores, students and samples are there).
    # A re-run with nothing new is this with no variant added (test_submit covers the pipeline's no-op re-run).
    run(*VARIANTS, ADDED)
    assert _counts(spark) == {"generated": 0, "scored": 0, "trained": 1, "evaluated": samples}
    assert _rows(spark, "c-0.9") == _by_hand(spark, "teacher-c", 0.9)


def test_an_as_is_subsample_is_a_seeded_random_choice_of_the_asked_size(spark):
    from distill.config import SubsampleConfig
    from distill.stages.experiment import subsample

    kept = spark.createDataFrame([(f"q{i:02d}", "t", 10 + i) for i in range(30)],
                                 "query_id string, teacher string, n_tokens int")

    def chosen(seed: int) -> list[str]:
        rows = subsample(kept, SubsampleConfig(size=12, length="as_is", seed=seed), []).collect()
        return sorted(r.query_id for r in rows)

    first = chosen(1)
    assert len(first) == len(set(first)) == 12
    assert chosen(1) == first  # the seed makes it repeatable
    assert chosen(2) != first  # another seed, another sample
    assert first != [f"q{i:02d}" for i in range(12)]  # not the first rows in input order
