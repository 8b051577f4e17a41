"""ingest end to end on real Spark + Delta: every line lands in `queries` or `quarantine` (with the
expected reason), re-runs change nothing, ids that change content are quarantined, Parquet and source
mappings work, and the run is recorded in `runs`."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distill.ids import stable_id
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from tests.conftest import ROOT, cli_overrides, run_cli

GOOD = [
    {"id": "m1", "category": "math", "query": "What is 6 times 7?", "reference_answer": "42"},
    {"id": "c1", "category": "code", "query": "Print the sum of two integers.",
     "test_cases": {"language": "cpp", "tests": [{"type": "stdio", "input": "1 2\n", "output": "3\n"}]}},
    {"category": "multi_turn", "messages": [{"role": "user", "content": "Hi"},
                                            {"role": "assistant", "content": "Hello!"},
                                            {"role": "user", "content": "Name a prime."}]},
]

# line number -> reason, for the broken lines of the file below
BROKEN = {
    4: "invalid_json",
    5: "missing_field",
    6: "unknown_category",
    7: "invalid_content",
    8: "invalid_role",
    9: "invalid_utf8",
    10: "line_too_long",
    11: "not_an_object",
    12: "empty_line",
    14: "id_conflict",
}


def broken_file(path, max_line_bytes):
    lines = [json.dumps(row).encode() for row in GOOD]
    lines += [
        b'{"id": "x1", "category": "math", "query": "unterminated',
        json.dumps({"id": "x2", "query": "no category"}).encode(),
        json.dumps({"id": "x3", "category": "poetry", "query": "?"}).encode(),
        json.dumps({"id": "x4", "category": "math", "messages": [{"role": "user", "content": 12}]}).encode(),
        json.dumps({"id": "x5", "category": "math", "messages": [{"role": "robot", "content": "hi"}]}).encode(),
        b'{"id": "x6", "category": "math", "query": "na\xefve \xff"}',
        json.dumps({"id": "x7", "category": "general", "query": "y" * (max_line_bytes + 10)}).encode(),
        json.dumps([{"id": "x8", "category": "math", "query": "in an array"}]).encode(),
        b"",
        json.dumps(GOOD[0]).encode(),  # 13: the same line again: a repeat of m1, not a new query
        json.dumps({**GOOD[0], "query": "What is 6 times 8?"}).encode(),  # 14: m1's id, other content
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def table(spark, cfg, name):
    return spark.read.format("delta").load(f"{cfg.warehouse}/{name}")


def test_every_line_ends_in_queries_or_quarantine(spark, cfg, tmp_path):
    src = tmp_path / "broken.jsonl"
    n_lines = broken_file(src, cfg.ingest.max_line_bytes)
    args = ["ingest", "--input", str(src), *cli_overrides(cfg)]
    assert run_cli(*args) == 0

    queries = table(spark, cfg, "queries")
    quarantine = table(spark, cfg, "quarantine")
    expected_queries = spark.createDataFrame(
        [
            (stable_id("id", "broken", "m1"), "m1", "math", 1, "new"),
            (stable_id("id", "broken", "c1"), "c1", "code", 2, "new"),
            (None, None, "multi_turn", 3, "new"),
        ],
        "query_id string, source_id string, category string, source_line long, status string",
    )
    got = queries.select("query_id", "source_id", "category", "source_line", "status")
    # the content-derived id of the multi-turn row is checked apart; here, its presence
    got = got.withColumn("query_id", F.when(F.col("source_id").isNull(), None).otherwise(F.col("query_id")))
    assertDataFrameEqual(got, expected_queries)
    assert queries.filter("source = 'broken'").count() == 3

    expected_quarantine = spark.createDataFrame(list(BROKEN.items()), "line long, reason string")
    assertDataFrameEqual(quarantine.select("line", "reason"), expected_quarantine)
    # nothing is lost: each line of the file is in exactly one table (line 13 repeats line 1)
    seen = {r.source_line for r in queries.collect()} | {r.line for r in quarantine.collect()} | {13}
    assert seen == set(range(1, n_lines + 1))

    huge = quarantine.filter("reason = 'line_too_long'").first()
    assert huge.raw_truncated and huge.raw_bytes > cfg.ingest.max_line_bytes
    assert len(huge.raw.encode()) <= cfg.ingest.quarantine_raw_max_bytes
    assert "first used with different content" in quarantine.filter("line = 14").first().detail

    run = table(spark, cfg, "runs").filter("job = 'ingest'").first()
    assert run.status == "succeeded"
    assert run.counts["lines"] == n_lines
    assert run.counts["inserted"] == 3 and run.counts["repeated"] == 1
    assert run.counts["quarantined"] == len(BROKEN)
    assert run.counts["quarantined.invalid_utf8"] == 1
    assert json.loads(run.config)["warehouse"] == cfg.warehouse
    assert run.table_versions["queries"] >= 1


def test_rerun_changes_nothing_and_a_changed_id_is_quarantined(spark, cfg, tmp_path):
    src = tmp_path / "q.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in GOOD) + "\n")
    args = ["ingest", "--input", str(src), "--source", "own", *cli_overrides(cfg)]
    assert run_cli(*args) == 0
    first = table(spark, cfg, "queries").drop("ingested_at", "ingest_run_id")
    assert run_cli(*args) == 0
    assertDataFrameEqual(table(spark, cfg, "queries").drop("ingested_at", "ingest_run_id"), first)
    # --all reads the file again (the re-run above did not: it is in ingest_files, unchanged)
    assert run_cli(*args, "--all") == 0
    assertDataFrameEqual(table(spark, cfg, "queries").drop("ingested_at", "ingest_run_id"), first)
    runs = table(spark, cfg, "runs").filter("job = 'ingest'").orderBy("started_at").collect()
    assert [r.counts.get("inserted", 0) for r in runs] == [3, 0, 0]
    assert [r.counts.get("lines", 0) for r in runs] == [3, 0, 3]
    assert [r.counts.get("files_unchanged", 0) for r in runs] == [0, 1, 0]
    assert runs[2].counts["already_present"] == 3

    # a later file that reuses an id for different content must not overwrite the first
    later = tmp_path / "later.jsonl"
    later.write_text(json.dumps({**GOOD[0], "query": "What is 6 times 9?"}) + "\n")
    assert run_cli("ingest", "--input", str(later), "--source", "own", *cli_overrides(cfg)) == 0
    assertDataFrameEqual(table(spark, cfg, "queries").drop("ingested_at", "ingest_run_id"), first)
    conflict = table(spark, cfg, "quarantine").collect()
    assert [(r.reason, r.detail) for r in conflict] == [
        ("id_conflict", "this id is already in `queries` with different content")]

    # a file changed in place is read again: its new line goes in, its old ones are already present
    src.write_text(src.read_text() + json.dumps({"id": "m2", "category": "math", "query": "What is 3 plus 4?"}) + "\n")
    assert run_cli(*args) == 0
    run = table(spark, cfg, "runs").filter("job = 'ingest'").orderBy(F.desc("started_at")).first()
    assert (run.counts["inserted"], run.counts["already_present"], run.counts.get("files_unchanged", 0)) == (1, 3, 0)
    assert [(r.source_file, r.lines, r.run_id) for r in table(spark, cfg, "ingest_files").where(
        F.col("source_file") == str(src)).orderBy("lines").collect()] == [
        (str(src), 3, runs[0].run_id), (str(src), 4, run.run_id)]  # --all found its file remembered already


def test_parquet_with_a_source_mapping(spark, cfg, tmp_path):
    path = tmp_path / "public.parquet"
    pq.write_table(pa.table({"uid": ["a", "b", "c"], "problem": ["1+1?", "2+2?", None],
                             "answer": ["2", "4", "6"]}), path)
    overrides = cli_overrides(cfg) + [
        "--set", f"ingest.sources=[{{name: pub, path: '{path}', category: math, "
                 f"fields: {{id: uid, query: problem, reference_answer: answer}}}}]"]
    assert run_cli("ingest", *overrides) == 0
    got = table(spark, cfg, "queries").select("source", "source_id", "category", "reference_answer",
                                              F.col("messages")[0]["content"].alias("text"))
    expected = spark.createDataFrame([("pub", "a", "math", "2", "1+1?"), ("pub", "b", "math", "4", "2+2?")],
                                     "source string, source_id string, category string, "
                                     "reference_answer string, text string")
    assertDataFrameEqual(got, expected)
    bad = table(spark, cfg, "quarantine").select("line", "reason").collect()
    assert [(r.line, r.reason) for r in bad] == [(3, "missing_field")]


def test_unreadable_file_is_quarantined_not_fatal(spark, cfg, tmp_path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(b"this is not parquet")
    assert run_cli("ingest", "--input", str(path), *cli_overrides(cfg)) == 0
    row = table(spark, cfg, "quarantine").first()
    assert (row.line, row.reason) == (0, "unreadable_file")


def test_sql_reads_tables_by_name(spark, cfg, tmp_path, capsys):
    src = tmp_path / "q.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in GOOD) + "\n")
    assert run_cli("ingest", "--input", str(src), *cli_overrides(cfg)) == 0
    capsys.readouterr()
    assert run_cli("sql", "SELECT category, count(*) AS n FROM queries GROUP BY 1 ORDER BY 1", "--csv",
                   *cli_overrides(cfg)) == 0
    assert capsys.readouterr().out == "category,n\ncode,1\nmath,1\nmulti_turn,1\n"


def test_config_errors_exit_2_and_name_the_key(cfg, capsys):
    assert run_cli("ingest", "--set", "ingest.max_line_bytes=big", *cli_overrides(cfg)) == 2
    assert "ingest.max_line_bytes: expected an integer" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_runs_headless_against_a_warehouse(spark, cfg, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    src = tmp_path / "q.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in GOOD) + "\n{bad\n")
    assert run_cli("ingest", "--input", str(src), *cli_overrides(cfg)) == 0
    nb = nbformat.read(ROOT / "notebooks/explore_warehouse.ipynb", as_version=4)
    os.environ["DISTILL_WAREHOUSE"] = cfg.warehouse
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        del os.environ["DISTILL_WAREHOUSE"]
    outputs = {i: "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)
               for i, cell in enumerate(nb.cells) if cell.cell_type == "code"}
    assert "'queries'" in outputs[1] and "'quarantine'" in outputs[1] and "'runs'" in outputs[1]
    by_category = outputs[3]
    for category in ("code", "math", "multi_turn"):
        assert category in by_category
    assert "invalid_json" in outputs[5]


def test_a_path_that_matches_nothing_is_an_error_not_an_empty_corpus(spark, cfg, tmp_path, capsys):
    assert run_cli("ingest", "--input", str(tmp_path / "typo.jsonl"), *cli_overrides(cfg)) == 2
    assert "no input files at" in capsys.readouterr().err
    run = table(spark, cfg, "runs").first()
    assert (run.job, run.status) == ("ingest", "failed") and "no input files" in run.error
