"""distill.settled: a run that left nothing to do is recorded, and a later run on the same state stops at once.

A small job over the `ingest_files` table (real Delta, real `runs` rows) stands in for generate, score, evaluate,
prepare and report, which use the same two calls; the sample pipeline's re-run tests see them in those jobs.
"""

from __future__ import annotations

import dataclasses

import distill.settled
from distill.runs import RunRecorder
from distill.settled import Settled, path_fingerprint
from distill.tables import append_new, ensure_table, read_table


def add_row(spark, cfg, name: str) -> None:
    from datetime import datetime, timezone

    from distill.tables import TABLES

    append_new(spark, cfg, "ingest_files", spark.createDataFrame(
        [(name, "1:1", "p", "t", 1, "r", datetime.now(timezone.utc))], TABLES["ingest_files"].ddl))


def job(spark, cfg, extra="x", settles=True, during=None) -> tuple[bool, str | None]:
    """One run: (whether it stopped as unchanged, the settled key it recorded)."""
    with RunRecorder(spark, cfg, "probe") as rec:
        state = Settled(spark, cfg, rec, ("ingest_files", "attempts"))  # attempts: no table (None)
        if state.unchanged(extra):
            return True, None
        if during is not None:
            during()
        if settles:
            state.settle()
    return False, rec.settled_key


def test_a_run_on_the_state_a_run_settled_on_does_nothing(spark, cfg):
    ensure_table(spark, cfg, "ingest_files")
    add_row(spark, cfg, "q1")
    first = job(spark, cfg)
    assert first[0] is False and first[1] is not None
    assert job(spark, cfg) == (True, None)  # the same tables, config, code and extra
    runs = read_table(spark, cfg, "runs").where("job = 'probe'").orderBy("started_at").collect()
    assert [r.settled_key for r in runs] == [first[1], None]
    assert [r.counts.get("settled_before", 0) for r in runs] == [0, 1]

    assert job(spark, cfg, extra="y")[0] is False  # another extra (a changed file, verifier, option)
    add_row(spark, cfg, "q2")  # a table moved
    moved = job(spark, cfg)
    assert moved[0] is False and moved[1] not in (None, first[1])
    assert job(spark, cfg)[0] is True
    other = dataclasses.replace(cfg, output_dir=cfg.output_dir + "-other")  # another config
    assert job(spark, other)[0] is False


def test_a_run_that_leaves_work_or_saw_another_jobs_commit_does_not_settle(spark, cfg):
    ensure_table(spark, cfg, "ingest_files")
    add_row(spark, cfg, "q1")
    assert job(spark, cfg, settles=False) == (False, None)
    assert job(spark, cfg)[0] is False  # nothing recorded before: it works, then settles
    # another job commits while this one runs (outside its run: not tagged with its run id)
    def other_job():
        from distill.tables import RUN_TAG

        tag = spark.conf.get(RUN_TAG)
        spark.conf.set(RUN_TAG, "another-run")
        try:
            add_row(spark, cfg, "q-other")
        finally:
            spark.conf.set(RUN_TAG, tag)

    assert job(spark, cfg, extra="z", during=other_job) == (False, None)
    # its own commits do not stop it settling
    own = job(spark, cfg, extra="w", during=lambda: add_row(spark, cfg, "q-own"))
    assert own[0] is False and own[1] is not None
    assert job(spark, cfg, extra="w")[0] is True


def test_a_checkout_with_changes_neither_settles_nor_skips(spark, cfg, monkeypatch):
    ensure_table(spark, cfg, "ingest_files")
    add_row(spark, cfg, "q1")
    monkeypatch.setattr(distill.settled, "git_sha", lambda: "0123abc+dirty")
    assert job(spark, cfg) == (False, None)
    assert job(spark, cfg) == (False, None)


def test_path_fingerprint_follows_a_file_and_a_folder(tmp_path):
    f = tmp_path / "a.jsonl"
    assert path_fingerprint(str(f)) == ""
    f.write_text("1\n")
    one = path_fingerprint(str(f))
    f.write_text("12\n")
    assert path_fingerprint(str(f)) not in ("", one)
    folder = path_fingerprint(str(tmp_path))
    (tmp_path / "b.jsonl").write_text("x\n")
    assert path_fingerprint(str(tmp_path)) != folder
