"""prepare on real Spark + Delta with the packaged embedder: each decontamination path (exact, n-gram,
semantic paraphrase above the threshold, unrelated below it), filters with their reasons, dedup with a
deterministic survivor, incremental re-runs that judge and embed only new rows, threshold changes that
re-decide without re-embedding, and unreadable benchmark files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from tests.conftest import cli_overrides, run_cli

pytestmark = pytest.mark.slow  # each prepare run loads the embedder in the Python workers

BENCH = [
    {"id": "b-speed",
     "question": "A train travels 240 kilometres in 3 hours. What is its average speed in km per hour?",
     "answer": "80"},
    {"id": "b-rect", "question": "A rectangle has a perimeter of 36 cm and a length of 10 cm. Find its area.",
     "answer": "80"},
    {"id": "b-long", "question": "Consider the sequence defined by a one equals two and each later term equals three "
                                 "times the previous term minus one; find the tenth term of the sequence.",
     "answer": "?"},
]

FIRST = [
    # an exact copy up to case and spacing
    {"id": "exact", "category": "math", "query": "a train travels 240 kilometres in 3 hours.  What is its average "
                                                 "speed in KM per hour?"},
    # a paraphrase (cosine 0.98 with the packaged MiniLM)
    {"id": "para", "category": "math", "query": "Find the area of a rectangle whose perimeter is 36 cm and whose "
                                                "length is 10 cm."},
    # shares a 13-word span with b-long inside a different question
    {"id": "ngram", "category": "math", "query": "Here is a twist: the sequence defined by a one equals two and each "
                                                 "later term equals three times the previous term minus one. Is the "
                                                 "hundredth term even?"},
    {"id": "unrelated", "category": "general", "query": "Write a haiku about autumn leaves."},
    {"id": "orig", "category": "science", "query": "Which organelle is the main site of ATP production during "
                                                   "aerobic respiration in eukaryotic cells?"},
    {"id": "copy", "category": "science", "query": "which organelle is the main site of ATP production during "
                                                   "aerobic respiration in eukaryotic cells?"},
    {"id": "near", "category": "science", "query": "Which organelle is the primary site of ATP production during "
                                                   "aerobic respiration in eukaryotic cells?"},
    {"id": "url", "category": "general", "query": "Summarise the article at https://example.com/post for me."},
    {"id": "empty", "category": "general", "query": "   "},
    {"id": "huge", "category": "general", "query": "Explain why the sky is blue. " + "Please be thorough. " * 20000},
]

SECOND = [
    {"id": "again", "category": "science", "query": "Which organelle is the MAIN site of ATP production during "
                                                    "aerobic respiration in eukaryotic cells?"},
    {"id": "fresh", "category": "general", "query": "Plan a three-day study schedule for a chemistry exam."},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def bench_overrides(path):
    return ["--set", f"prepare.decontam.benchmarks=[{{name: mini, path: '{path}'}}]"]


def statuses(spark, cfg):
    return spark.read.format("delta").load(f"{cfg.warehouse}/queries").selectExpr("source_id", "status", "drop_reason")


def ids_of(spark, cfg):
    rows = spark.read.format("delta").load(f"{cfg.warehouse}/queries").select("source_id", "query_id").collect()
    return {r.source_id: r.query_id for r in rows}


def runs(spark, cfg, job):
    return spark.read.format("delta").load(f"{cfg.warehouse}/runs").filter(f"job = '{job}'").orderBy(
        "started_at").collect()


def test_prepare_decontaminates_filters_dedups_and_is_incremental(spark, cfg, tmp_path):
    bench = write_jsonl(tmp_path / "bench.jsonl", BENCH)
    args = [*cli_overrides(cfg), *bench_overrides(bench)]
    assert run_cli("ingest", "--input", str(write_jsonl(tmp_path / "first.jsonl", FIRST)), "--source", "t", *args) == 0
    assert run_cli("prepare", *args) == 0
    ids = ids_of(spark, cfg)
    expected = [
        ("exact", "dropped", "contaminated:mini"),
        ("para", "dropped", "contaminated:mini"),
        ("ngram", "dropped", "contaminated:mini"),
        ("unrelated", "kept", None),
        ("orig", "kept", None),
        ("copy", "dropped", f"duplicate_of:{ids['orig']}"),
        ("near", "dropped", f"near_duplicate_of:{ids['orig']}"),
        ("url", "dropped", "filter:url"),
        ("empty", "dropped", "filter:empty"),
        ("huge", "kept", None),
    ]
    schema = "source_id string, status string, drop_reason string"
    assertDataFrameEqual(statuses(spark, cfg), spark.createDataFrame(expected, schema))

    matches = spark.read.format("delta").load(f"{cfg.warehouse}/decontam_matches").collect()
    by_query = {}
    for m in matches:
        by_query.setdefault(m.query_id, set()).add((m.item_id, m.method))
    assert by_query == {
        ids["exact"]: {("b-speed", "exact"), ("b-speed", "ngram13"), ("b-speed", "semantic")},
        ids["para"]: {("b-rect", "semantic")},
        ids["ngram"]: {("b-long", "ngram13")},
    }
    assert all(m.similarity >= 0.9 for m in matches if m.method == "semantic")
    first = runs(spark, cfg, "prepare")[0]
    assert first.counts["todo"] == len(FIRST)

    # --- a second batch: only it is judged and embedded; old decisions stand; dedup reaches old rows
    assert run_cli("ingest", "--input", str(write_jsonl(tmp_path / "second.jsonl", SECOND)), "--source", "t",
                   *args) == 0
    assert run_cli("prepare", *args) == 0
    second = runs(spark, cfg, "prepare")[1]
    assert second.counts["todo"] == len(SECOND)
    assert second.counts["embedded"] == len(SECOND)  # only the new texts; the 11 cached ones are not redone
    ids = ids_of(spark, cfg)
    expected += [("again", "dropped", f"duplicate_of:{ids['orig']}"), ("fresh", "kept", None)]
    assertDataFrameEqual(statuses(spark, cfg), spark.createDataFrame(expected, schema))

    # --- a stricter threshold re-judges everything from cached embeddings
    stricter = [*args, "--set", "prepare.decontam.similarity_threshold=0.99"]
    assert run_cli("prepare", *stricter) == 0
    third = runs(spark, cfg, "prepare")[2]
    assert third.counts["todo"] == len(FIRST) + len(SECOND)
    assert third.counts.get("embedded", 0) == 0
    para = [r for r in statuses(spark, cfg).collect() if r.source_id == "para"][0]
    assert (para.status, para.drop_reason) == ("kept", None)
    # a re-run with nothing new does nothing: the last run settled (distill.settled), this one stops at once
    assert run_cli("prepare", *stricter) == 0
    assert runs(spark, cfg, "prepare")[3].counts.get("todo", 0) == 0
    assert runs(spark, cfg, "prepare")[3].counts["settled_before"] == 1


def test_dedup_survivor_does_not_depend_on_partitioning(spark, cfg, tmp_path):
    rows = [{"id": f"r{i}", "category": "general", "query": f"Describe   the colour of the sky at noon{'.' * (i % 2)}"}
            for i in range(6)]
    src = write_jsonl(tmp_path / "dups.jsonl", rows)
    results = []
    for partitions in (1, 7):
        wh = tmp_path / f"wh{partitions}"
        args = ["--set", f"warehouse={wh}", "--set", "prepare.decontam.semantic=false",
                "--set", "prepare.decontam.benchmarks=[]"]
        args = [*cli_overrides(cfg)[:-4], *args]
        spark.conf.set("spark.sql.shuffle.partitions", partitions)
        assert run_cli("ingest", "--input", str(src), "--source", "d", *args) == 0
        assert run_cli("prepare", *args) == 0
        df = spark.read.format("delta").load(f"{wh}/queries")
        ids = {r.query_id: r.source_id for r in df.collect()}
        results.append(sorted((r.source_id, r.status, r.drop_reason and r.drop_reason.split(":")[0],
                               r.drop_reason and ids[r.drop_reason.split(":")[1]]) for r in df.collect()))
    spark.conf.set("spark.sql.shuffle.partitions", 2)
    assert results[0] == results[1]
    # even lines are one text, odd lines the same with a final "." (a near-duplicate): the first line of each
    # exact group survives that group, and the odd group's survivor is a near-duplicate of the even one's
    assert results[0] == [("r0", "kept", None, None), ("r1", "dropped", "near_duplicate_of", "r0"),
                          ("r2", "dropped", "duplicate_of", "r0"), ("r3", "dropped", "duplicate_of", "r1"),
                          ("r4", "dropped", "duplicate_of", "r0"), ("r5", "dropped", "duplicate_of", "r1")]


@pytest.mark.parametrize("name, content, message", [
    ("bench.csv", "question,answer\nWhat?,1\n", "unknown format"),
    ("missing.jsonl", None, "does not exist"),
    ("bad.jsonl", '{"question": "ok"}\nnot json\n', "not JSON"),
    ("notext.jsonl", '{"answer": "1"}\n', "has no text"),
])
def test_unreadable_benchmarks_are_config_errors(spark, cfg, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    # a config error, found before any table is read (there is none here: no ingest ran)
    assert run_cli("prepare", *cli_overrides(cfg), *bench_overrides(path)) == 2
    err = capsys.readouterr().err
    assert "prepare.decontam.benchmarks.0.path" in err and message in err
    assert "no `queries` table" not in err and not (Path(cfg.warehouse) / "queries").exists()
