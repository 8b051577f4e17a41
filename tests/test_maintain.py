"""The maintain job on real Delta tables: OPTIMIZE compacts a table's small files without changing a row,
VACUUM deletes the files older versions needed (time travel past the retention then fails) but keeps the
`sft` snapshot the last curate recorded, stale scratch folders go, and an unsafe retention is a config
error naming the key."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pytest
from distill.records import parse_record
from distill.runs import RunRecorder
from distill.tables import TABLES, merge_new, merge_update, table_path

from tests.conftest import cli_overrides, run_cli


def _nullable(name: str) -> str:
    return TABLES[name].ddl.replace(" not null", "")


def _queries(spark, cfg, ids):
    now = datetime.now(timezone.utc)
    rows = [{**parse_record({"id": i, "category": "math", "query": f"What is {i}?"}, "t").row,
             "status": "kept", "ingest_run_id": "r0", "ingested_at": now} for i in ids]
    merge_new(spark, cfg, "queries", spark.createDataFrame(rows, _nullable("queries")))


def _sft(spark, cfg, n):
    now = datetime.now(timezone.utc)
    rows = [{"query_id": f"q{i}", "teacher": "a", "attempt": 1, "category": "math",
             "messages": [{"role": "user", "content": f"What is {i}?"}], "response": "<answer>1</answer>",
             "run_id": "r0", "added_at": now, "keep": True} for i in range(n)]
    return merge_new(spark, cfg, "sft", spark.createDataFrame(rows, _nullable("sft")))["version"]


def _rows(spark, path, version=None):
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return sorted(tuple(r) for r in reader.load(path).select("query_id", "keep" if "sft" in path else "status")
                  .collect())


def _files(spark, path) -> int:
    return spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["numFiles"]


def test_maintain_compacts_vacuums_and_keeps_the_curated_snapshot(spark, cfg, capsys):
    for batch in range(4):  # four MERGEs: four small files at least
        _queries(spark, cfg, [f"b{batch}-{i}" for i in range(5)])
    queries = table_path(cfg, "queries")
    before, files_before = _rows(spark, queries), _files(spark, queries)
    assert files_before >= 4

    curated = _sft(spark, cfg, 6)
    with RunRecorder(spark, cfg, "curate") as rec:  # what curate records: the dataset snapshot
        rec.wrote("sft", curated)
    sft = table_path(cfg, "sft")
    snapshot = _rows(spark, sft, curated)
    merge_update(spark, cfg, "sft", spark.createDataFrame([(f"q{i}", "a", False) for i in range(6)],
                                                          "query_id string, teacher string, keep boolean"), ["keep"])

    staging = table_path(cfg, "_staging")
    old, young = os.path.join(staging, "generate-r1-dead"), os.path.join(staging, "generate-r1-live")
    for folder in (old, young):
        os.makedirs(folder)
        open(os.path.join(folder, "part-0.parquet"), "w").close()
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))

    args = [*cli_overrides(cfg), "--set", "maintain.retain_hours=0", "--set", "maintain.allow_short_retention=true"]
    assert run_cli("maintain", *args) == 0
    out = capsys.readouterr().out

    assert _rows(spark, queries) == before and _files(spark, queries) == 1
    with pytest.raises(Exception, match="TIME_TRAVEL_BEYOND_DELETED_FILE_RETENTION"):  # vacuumed: it is gone
        spark.read.format("delta").option("versionAsOf", 1).load(queries).collect()
    assert _rows(spark, sft, curated) == snapshot  # the curated snapshot is still readable
    assert os.path.exists(young) and not os.path.exists(old)
    assert f"maintain: queries: {files_before} -> 1 files" in out

    run = spark.sql("SELECT counts FROM runs WHERE job = 'maintain'").first()["counts"]
    assert run["queries.files_deleted"] >= files_before and run["staging_removed"] == 1
    config = json.loads(spark.sql("SELECT config FROM runs WHERE job = 'maintain'").first()["config"])
    assert config["maintain"]["retain_hours"] == 0


def test_a_short_retention_needs_saying_so(cfg, capsys):
    assert run_cli("maintain", *cli_overrides(cfg), "--set", "maintain.retain_hours=24") == 2
    assert "maintain.retain_hours: 24 is under 168" in capsys.readouterr().err
