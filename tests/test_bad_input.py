"""Bad input at every entry, through the CLI on real Spark and Delta: each case ends with its documented
exit code (README, "When input is bad") and a message naming what is wrong, and leaves every table as it
was: no commit to a table that existed, no row in one that did not. Rows that are bad (malformed lines,
garbage or empty teacher output) are data: they are kept with a reason and the job succeeds."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import yaml
from distill.records import parse_record
from distill.tables import TABLES, merge_new, table_path

from tests.conftest import cli_overrides, run_cli

QUERIES = [
    {"id": "m1", "category": "math", "query": "What is 7 * 6?", "reference_answer": "42"},
    {"id": "g1", "category": "general", "query": "Tell me about owls."},
]
GOOD = "<think>\nsix sevens\n</think>\n<answer>\n\\boxed{42}\n</answer>"


@pytest.fixture
def warehouse(spark, cfg, tmp_path):
    """Kept queries, a replay teacher whose output is empty or garbage, and the config pointing at them."""
    now = datetime.now(timezone.utc)
    rows = [{**parse_record(q, "t").row, "status": "kept", "ingest_run_id": "r0", "ingested_at": now}
            for q in QUERIES]
    merge_new(spark, cfg, "queries", spark.createDataFrame(rows, TABLES["queries"].ddl.replace(" not null", "")))
    junk = [("m1", 1, ""), ("m1", 2, "}{\x00 ¿¿ <answer>"), ("g1", 1, "")]
    replay = tmp_path / "junk.jsonl"
    replay.write_text("".join(json.dumps({"source": "t", "id": q, "attempt": a, "response": r}) + "\n"
                              for q, a, r in junk))
    conf = {"teachers": [{"name": "junk", "engine": "replay", "model": str(replay)}],
            "generate": {"max_attempts": 2, "accept_no_verifier": True, "partitions": 2},
            "verify": {"math": {"workers": 1}}}
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return ["--conf", str(path), *cli_overrides(cfg)]


def state(spark, cfg) -> dict:
    """Every table but `runs` (which records failed runs too): its latest version and row count."""
    from delta.tables import DeltaTable

    out = {}
    for name in TABLES:
        path = table_path(cfg, name)
        if name != "runs" and DeltaTable.isDeltaTable(spark, path):
            out[name] = (DeltaTable.forPath(spark, path).history(1).first()["version"],
                         spark.read.format("delta").load(path).count())
    return out


def unchanged(before: dict, after: dict) -> bool:
    """Tables that existed have no new commit; a table the failed run made is empty."""
    return all(after[n] == before[n] if n in before else after[n][1] == 0 for n in after)


def test_bad_config_models_endpoints_and_files_fail_cleanly(spark, cfg, warehouse, tmp_path, capsys):
    bad_bench = tmp_path / "bench.jsonl"
    bad_bench.write_text("this is not json\n")
    cases = [  # job, --set overrides, exit code, message
        ("generate", ["generate.max_attempts=two"], 2, "generate.max_attempts: expected an integer"),
        ("generate", ["generate.colour=red"], 2, "generate.colour: unknown key"),
        ("generate", ["teachers=[{name: t, engine: vllm, model: /no/such/model}]"], 2,
         "teachers.0.model: no such file or folder '/no/such/model'"),
        ("generate", ["verify.judge={name: j, engine: transformers, model: /no/such/judge}"], 2,
         "verify.judge.model: no such file or folder"),
        ("prepare", [f"prepare.decontam.benchmarks=[{{name: b, path: '{bad_bench}'}}]"], 2,
         "prepare.decontam.benchmarks.0"),
        ("prepare", ["prepare.decontam.benchmarks=[{name: b, path: /no/such/bench.jsonl}]"], 2,
         "prepare.decontam.benchmarks.0"),
        ("prepare", ["prepare.decontam.benchmarks=[{name: b, path: data/sample/benchmark.jsonl}]",
                     "prepare.embedder.path=/no/such/embedder"], 2, "prepare.embedder.path: no model at"),
        ("generate", ["teachers=[{name: t, engine: openai, model: m, engine_args: "
                      "{base_url: 'http://127.0.0.1:9/v1', max_retries: 0}}]"], 1,
         "teacher 't': all 2 requests failed"),
    ]
    for job, overrides, code, message in cases:
        before = state(spark, cfg)
        args = [x for o in overrides for x in ("--set", o)]
        assert run_cli(job, *warehouse, *args) == code, (job, overrides)
        assert message in capsys.readouterr().err, (job, overrides)
        assert unchanged(before, state(spark, cfg)), (job, overrides)
    # a config that does not load stops before a run starts; every later failure is a failed run in `runs`
    failed = spark.sql("SELECT job, error FROM runs WHERE status = 'failed' ORDER BY started_at").collect()
    assert [r.job for r in failed] == [job for job, *_ in cases[2:]]
    assert all(message in r.error for r, (*_, message) in zip(failed, cases[2:], strict=True))


def test_garbage_and_empty_teacher_output_is_kept_with_a_reason(spark, cfg, warehouse, tiny_model, capsys):
    assert run_cli("generate", *warehouse) == 0
    rows = spark.sql("SELECT q.source_id, a.attempt, a.response, a.verify_status, a.verify_score, a.accepted, "
                     "a.verify_detail FROM attempts a JOIN queries q USING (query_id) ORDER BY 1, 2").collect()
    # math: both attempts unreadable (no answer to check), never a silent 0; regenerated up to max_attempts
    assert [(r.source_id, r.attempt, r.response, r.verify_status, r.verify_score, r.accepted) for r in rows] == [
        ("g1", 1, "", "no_verifier", 0.0, True),
        ("m1", 1, "", "parse_error", 0.0, False),
        ("m1", 2, "}{\x00 ¿¿ <answer>", "parse_error", 0.0, False),
    ]
    assert all(json.loads(r.verify_detail).get("reason") for r in rows if r.verify_status == "parse_error")
    # a missing reference model stops score before it writes; the accepted empty answer (no verifier for
    # `general`) is then scored and rejected for its structure
    before = state(spark, cfg)
    assert run_cli("score", *warehouse, "--set", "score.perplexity.model=/no/such/model") == 2
    assert "score.perplexity.model: no model at" in capsys.readouterr().err
    assert unchanged(before, state(spark, cfg))
    model = ["--set", f"score.perplexity.model={tiny_model}"]
    assert run_cli("score", *warehouse, *model) == 0 and run_cli("curate", *warehouse, *model) == 0
    sft = spark.sql("SELECT teacher, keep, reject_reason FROM sft").collect()
    assert [tuple(r) for r in sft] == [("junk", False, "structure:no_think")]
