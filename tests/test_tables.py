"""Delta hygiene of the tables themselves: NOT NULL keys and CHECK constraints that Delta enforces (a bad
write fails whole and leaves the table as it was), the change data feed, and tables made before the
constraints existed getting them."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from distill.tables import MESSAGES, TABLES, ensure_table, merge_new, merge_update, table_path
from pyspark.sql.types import StructType

# Report tables group by values that may be missing (an attempt without a score has no score bin):
# there a null is a group of its own, not a broken key.
NULLABLE_GROUPS = {("report_verify", "score_bin"), ("report_verify", "status")}


def test_every_key_column_is_not_null_and_every_check_names_real_columns(spark):
    for table in TABLES.values():
        schema = StructType.fromDDL(table.ddl)
        for key in table.keys:
            assert key in schema.fieldNames(), (table.name, key)
            if (table.name, key) not in NULLABLE_GROUPS:
                assert not schema[key].nullable, f"{table.name}.{key} must be NOT NULL"
    assert set(TABLES["attempts"].checks) >= {"verify_score_range", "attempt_positive"}
    assert set(TABLES["sft"].checks) >= {"verify_score_range", "ppl_positive", "n_tokens_non_negative"}


def _attempt(query_id, attempt=1, score=1.0, status="ok"):
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return {"query_id": query_id, "teacher": "t", "attempt": attempt, "category": "math", "engine": "replay",
            "model": "m", "seed": 1, "response": "<think>x</think><answer>1</answer>", "run_id": "r",
            "generated_at": now, "verify_score": score, "verify_status": status,
            "accepted": None if score is None else score >= 0.9}


def _frame(spark, rows):
    schema = StructType.fromDDL(TABLES["attempts"].ddl)
    # the source frame itself is nullable everywhere: the table, not the frame, must refuse bad rows
    nullable = StructType([f.__class__(f.name, f.dataType, True) for f in schema.fields])
    return spark.createDataFrame([{f: r.get(f) for f in schema.fieldNames()} for r in rows], nullable)


def _version(spark, path) -> int:
    return spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()["version"]


def test_a_row_breaking_a_constraint_fails_the_whole_write(spark, cfg):
    merge_new(spark, cfg, "attempts", _frame(spark, [_attempt("q1"), _attempt("q2", score=0.0)]))
    path = table_path(cfg, "attempts")
    before = _version(spark, path)
    for bad, message in [(_attempt("q9", score=1.5), "verify_score_range"),
                         (_attempt("q9", attempt=0), "attempt_positive"),
                         (_attempt("q9", status="fine"), "verify_status_known"),
                         (_attempt(None), "NOT NULL constraint violated for column: query_id")]:
        with pytest.raises(Exception, match=message):
            merge_new(spark, cfg, "attempts", _frame(spark, [_attempt("q3"), bad]))
    assert _version(spark, path) == before  # nothing committed: q3 did not land either
    rows = spark.read.format("delta").load(path).select("query_id").collect()
    assert sorted(r[0] for r in rows) == ["q1", "q2"]


def test_change_data_feed_shows_what_a_merge_changed(spark, cfg):
    merge_new(spark, cfg, "attempts", _frame(spark, [_attempt("q1", score=None, status=None)]))
    first = _version(spark, table_path(cfg, "attempts"))
    scored = _frame(spark, [_attempt("q1", score=0.5)]).select("query_id", "teacher", "attempt", "verify_score")
    merge_update(spark, cfg, "attempts", scored, ["verify_score"])
    changes = spark.sql(f"SELECT query_id, verify_score, _change_type FROM table_changes('attempts', {first + 1}) "
                        "ORDER BY _change_type").collect()
    assert [tuple(r) for r in changes] == [("q1", 0.5, "update_postimage"), ("q1", None, "update_preimage")]
    ensure_table(spark, cfg, "sft")
    props = dict(spark.sql("SHOW TBLPROPERTIES sft").collect())
    assert props["delta.enableChangeDataFeed"] == "true"
    assert props["delta.constraints.ppl_positive"] == "ppl IS NULL OR ppl > 0"


def test_a_table_made_without_constraints_gets_them(spark, cfg):
    from delta.tables import DeltaTable

    path = table_path(cfg, "attempts")
    DeltaTable.create(spark).location(path).addColumns(StructType.fromDDL(TABLES["attempts"].ddl)).execute()
    _frame(spark, [_attempt("q1")]).write.format("delta").mode("append").save(path)
    ensure_table(spark, cfg, "attempts")
    props = dict(spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect())
    assert {f"delta.constraints.{n.lower()}" for n in TABLES["attempts"].checks} <= set(props)
    assert props["delta.enableChangeDataFeed"] == "true"
    with pytest.raises(Exception, match="verify_score_range"):
        merge_new(spark, cfg, "attempts", _frame(spark, [_attempt("q2", score=-0.1)]))


def test_a_table_removed_after_a_write_is_made_again_with_its_constraints(spark, cfg):
    """ensure_table remembers the tables it made in this process; one removed since must not look present."""
    import shutil

    merge_new(spark, cfg, "attempts", _frame(spark, [_attempt("q1")]))
    shutil.rmtree(table_path(cfg, "attempts"))
    merge_new(spark, cfg, "attempts", _frame(spark, [_attempt("q2")]))
    rows = spark.read.format("delta").load(table_path(cfg, "attempts")).select("query_id").collect()
    assert [r[0] for r in rows] == ["q2"]
    with pytest.raises(Exception, match="verify_score_range"):
        merge_new(spark, cfg, "attempts", _frame(spark, [_attempt("q3", score=1.5)]))


def test_writing_the_same_rows_again_moves_no_version(spark, cfg):
    """merge_upsert and merge_replace with `ignore`, and merge_mirror, commit nothing when nothing changes (a
    re-run), so what keys on a table's version (report) sees no change that is none; a real change lands."""
    from distill.tables import merge_mirror, merge_replace, merge_upsert

    now = datetime.now(timezone.utc)

    def students(run_id, samples_b=2):
        rows = [(name, ["teacher-a"], 1, "set", "train", "base", f"/m/{name}", samples, run_id, now)
                for name, samples in (("a", 1), ("b", samples_b))]
        return spark.createDataFrame(rows, TABLES["students"].ddl)

    path = table_path(cfg, "students")
    v1 = merge_upsert(spark, cfg, "students", students("r1"), ignore=("run_id", "trained_at"))["version"]
    assert merge_upsert(spark, cfg, "students", students("r2"), ignore=("run_id", "trained_at")) == {"version": v1}
    assert _version(spark, path) == v1
    merge_upsert(spark, cfg, "students", students("r3", samples_b=5), ignore=("run_id", "trained_at"))
    got = sorted((r.student, r.samples, r.run_id) for r in spark.read.format("delta").load(path).collect())
    assert got == [("a", 1, "r1"), ("b", 5, "r3")]  # only the changed row was written

    def sft(*pairs, run_id="r1"):
        rows = [(q, "teacher-a", attempt, "math", [("user", "q")], f"answer {attempt}", run_id, now)
                for q, attempt in pairs]
        return spark.createDataFrame(rows, f"query_id string, teacher string, attempt int, category string, "
                                           f"messages {MESSAGES}, response string, run_id string, added_at timestamp")

    changed = "t.attempt <> s.attempt OR t.response <> s.response"
    v2 = merge_mirror(spark, cfg, "sft", sft(("q1", 1), ("q2", 1)), changed)["version"]
    assert merge_mirror(spark, cfg, "sft", sft(("q1", 1), ("q2", 1), run_id="r2"), changed) == {"version": v2}
    assert merge_mirror(spark, cfg, "sft", sft(("q1", 2)), changed)["version"] > v2  # q1 replaced, q2 gone
    rows = spark.read.format("delta").load(table_path(cfg, "sft")).collect()
    assert sorted((r.query_id, r.attempt) for r in rows) == [("q1", 2)]

    def items(run_id, *ids, prompt="p"):
        rows = [("b", i, "math", None, None, prompt, "1", None, f"h{i}", None, 1, run_id) for i in ids]
        return spark.createDataFrame(rows, TABLES["eval_items"].ddl)

    def item_rows():
        return sorted((r.item_id, r.prompt, r.run_id) for r in spark.read.format("delta").load(
            table_path(cfg, "eval_items")).collect())

    scope = spark.createDataFrame([("b",)], "benchmark string")
    v3 = merge_replace(spark, cfg, "eval_items", items("r1", "1", "2"), "benchmark", scope, ignore=("run_id",))[
        "version"]
    assert merge_replace(spark, cfg, "eval_items", items("r2", "1", "2"), "benchmark", scope,
                         ignore=("run_id",)) == {"version": v3}
    assert item_rows() == [("1", "p", "r1"), ("2", "p", "r1")]
    for changed, want in ((items("r3", "1"), [("1", "p", "r3")]),  # a row fewer
                          (items("r4", "1", prompt="q"), [("1", "q", "r4")])):  # a row changed
        merge_replace(spark, cfg, "eval_items", changed, "benchmark", scope, ignore=("run_id",))
        assert item_rows() == want


def test_a_run_finds_its_own_commit_when_another_run_committed_after_it(spark, cfg):
    """runs.table_versions must name the run's own commit: here run B commits between run A's write and A's
    look-up of the version it made (the race of two concurrent writers, made deterministic)."""
    from distill.runs import RunRecorder
    from distill.tables import RUN_TAG, last_operation

    spark_b = spark.newSession()  # its own SQL settings, so its own run tag
    with RunRecorder(spark, cfg, "a") as a:
        merge_new(spark, cfg, "attempts", _frame(spark, [_attempt("qa")]))
        with RunRecorder(spark_b, cfg, "b") as b:
            merge_new(spark_b, cfg, "attempts", _frame(spark_b, [_attempt("qb")]))
            mine_b = last_operation(ensure_table(spark_b, cfg, "attempts"))
        mine_a = last_operation(ensure_table(spark, cfg, "attempts"))
    path = table_path(cfg, "attempts")
    history = {r["version"]: r["userMetadata"]
               for r in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "userMetadata").collect()}
    assert history[mine_a["version"]] == a.run_id and history[mine_b["version"]] == b.run_id
    assert mine_a["version"] < mine_b["version"] and mine_a["numTargetRowsInserted"] == 1
    assert spark.conf.get(RUN_TAG, None) is None and spark_b.conf.get(RUN_TAG, None) is None  # put back


def test_two_concurrent_writers_record_their_own_versions_in_runs(spark, cfg):
    import threading

    from distill.runs import RunRecorder

    recorders, errors = {}, []
    # Two jobs are two processes with catalogs of their own; two sessions of one process share theirs, so
    # the table names are registered here first, not by both threads at once.
    sessions = {n: spark.newSession() for n in ("x", "y")}
    for session in sessions.values():
        for table in ("attempts", "runs"):
            ensure_table(session, cfg, table)

    def writer(name: str) -> None:
        session = sessions[name]
        try:
            with RunRecorder(session, cfg, name) as rec:
                recorders[name] = rec
                for i in range(3):
                    m = merge_new(session, cfg, "attempts", _frame(session, [_attempt(f"{name}{i}")]))
                    rec.wrote(f"attempts_{i}", m["version"])
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    path = table_path(cfg, "attempts")
    history = {r["version"]: r["userMetadata"]
               for r in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").select("version", "userMetadata").collect()}
    for name, rec in recorders.items():
        versions = [rec.table_versions[f"attempts_{i}"] for i in range(3)]
        assert [history[v] for v in versions] == [rec.run_id] * 3, (name, versions, history)
        # and each of those commits holds exactly the row that write added
        for i, v in enumerate(versions):
            added = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", v) \
                .option("endingVersion", v).load(path).select("query_id").collect()
            assert [r[0] for r in added] == [f"{name}{i}"]
    runs = {r["job"]: r["table_versions"] for r in spark.read.format("delta").load(table_path(cfg, "runs")).collect()}
    assert runs == {n: recorders[n].table_versions for n in ("x", "y")}


def test_a_column_made_not_null_before_may_be_null_after_the_upgrade(spark, cfg):
    from delta.tables import DeltaTable

    path = table_path(cfg, "students")
    old = TABLES["students"].ddl.replace("sft_version long,", "sft_version long not null,")
    DeltaTable.create(spark).location(path).addColumns(StructType.fromDDL(old)).execute()
    assert not spark.read.format("delta").load(path).schema["sft_version"].nullable
    ensure_table(spark, cfg, "students")
    assert spark.read.format("delta").load(path).schema["sft_version"].nullable


def test_a_table_another_process_is_creating_is_read_once_its_first_commit_lands(spark, cfg, tmp_path, monkeypatch):
    import shutil
    import threading

    import distill.tables as t

    made = tmp_path / "made"
    spark.range(3).write.format("delta").save(str(made))
    creating = tmp_path / "creating"
    (creating / "_delta_log").mkdir(parents=True)  # the other process's table: a log folder, no commit yet
    with pytest.raises(Exception, match="DELTA_TABLE_NOT_FOUND"):
        spark.read.format("delta").load(str(creating))  # what Delta says about it now
    monkeypatch.setattr(t, "CREATE_WAIT_S", 1.0)

    def commit():  # the other process's first commit lands while read_path waits
        shutil.copy(made / "_delta_log" / "00000000000000000000.json", creating / "_delta_log")
        for f in made.glob("*.parquet"):
            shutil.copy(f, creating)

    timer = threading.Timer(0.3, commit)
    timer.start()
    try:
        assert t.read_path(spark, str(creating)).count() == 3
    finally:
        timer.join()
    (tmp_path / "never" / "_delta_log").mkdir(parents=True)  # still no commit after the wait: Delta's error
    with pytest.raises(Exception, match="DELTA_TABLE_NOT_FOUND"):
        t.read_path(spark, str(tmp_path / "never"))


def test_versions_and_metrics_read_from_the_log_equal_deltas_history(spark, cfg):
    """current_version, last_operation and commits_tagged read the commit files (distill.tables._DeltaLog);
    Delta's own history() must say the same, across a checkpoint (12 commits: Delta writes one at 10) and
    commits of two runs."""
    from delta.tables import DeltaTable
    from distill.tables import RUN_TAG, commits_tagged, current_version, last_operation

    for i in range(12):
        spark.conf.set(RUN_TAG, f"run-{i >= 9}")  # versions 10-12 are run-True's
        merge_new(spark, cfg, "attempts", _frame(spark, [_attempt(f"q{i}")]))
    target = DeltaTable.forPath(spark, table_path(cfg, "attempts"))
    checkpoint = Path(table_path(cfg, "attempts")) / "_delta_log" / "_last_checkpoint"
    assert json.loads(checkpoint.read_text())["version"] == 10

    history = {r["version"]: r for r in target.history().select("version", "operationMetrics",
                                                                "userMetadata").collect()}
    since_values = (None, 8, 9, 11, 12)

    def through_history(tag: str):
        """The same three answers, from Delta's history(): newest version, the tagged commit, commits_tagged."""
        newest = max(history)
        version = max((v for v, r in history.items() if r["userMetadata"] == tag), default=newest)
        metrics = {k: int(v) for k, v in (history[version]["operationMetrics"] or {}).items() if str(v).isdigit()}
        return (newest, {"version": version, **metrics},
                [all(r["userMetadata"] == "run-True" for v, r in history.items() if since is None or v > since)
                 for since in since_values])

    try:
        for tag in ("run-True", "run-False", "no-such-run"):
            spark.conf.set(RUN_TAG, tag)
            got = (current_version(target), last_operation(target),
                   [commits_tagged(spark, cfg, "attempts", since, "run-True") for since in since_values])
            assert got == through_history(tag), tag
            assert got[0] == 12 and got[2] == [False, False, True, True, True]
        assert got[1]["version"] == 12 and got[1]["numTargetRowsInserted"] == 1  # untagged: the newest
        spark.conf.set(RUN_TAG, "run-False")
        assert last_operation(target)["version"] == 9
    finally:
        spark.conf.unset(RUN_TAG)


def test_tables_written_side_by_side_are_each_one_commit_of_their_own_rows(spark, cfg):
    """distill.spark.side_by_side, as `report` writes its tables: several new tables at once, each created and
    written whole in one commit of its own, the results in call order; a call's error reaches the caller."""
    from distill.runs import RunRecorder
    from distill.spark import side_by_side
    from distill.tables import last_operation, read_table, replace_all
    from pyspark.sql import functions as F

    rejects = spark.createDataFrame([("a", "math", "too_long", 2), ("b", "code", "pending", 1)],
                                    "teacher string, category string, reason string, count long")
    hist = spark.createDataFrame([("a", "math", 3, 8, 15, 4)],
                                 "teacher string, category string, bin int, lo long, hi long, count long")
    with RunRecorder(spark, cfg, "report") as rec:
        tagged = {"report_rejects": rejects.withColumn("run_id", F.lit(rec.run_id)),
                  "report_length_hist": hist.withColumn("run_id", F.lit(rec.run_id))}
        written = side_by_side(spark, [lambda name=name, df=df: replace_all(spark, cfg, name, df)
                                for name, df in tagged.items()])
        assert [w["version"] for w in written] == [1, 1]  # each made (version 0), then written (1)
        for name, df in tagged.items():
            assert sorted(read_table(spark, cfg, name).collect()) == sorted(df.collect())
            assert last_operation(ensure_table(spark, cfg, name))["version"] == 1

        def broken():
            raise ValueError("this call failed")

        with pytest.raises(ValueError, match="this call failed"):
            side_by_side(spark, [lambda: replace_all(spark, cfg, "report_rejects", tagged["report_rejects"].limit(1)),
                          broken])
    assert read_table(spark, cfg, "report_rejects").count() == 1  # the other call still ran to its end
