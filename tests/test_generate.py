"""The generate job's verify-until-0.9 loop on real Spark and Delta, with replay teachers: a pair stops at
its first passing attempt, `max_attempts` is respected, unverifiable categories stop after one attempt,
a re-run generates nothing, a crash mid-round followed by a re-run ends with the same ledger (no
duplicate keys, nothing lost, nothing regenerated), verifier version bumps re-verify without
regenerating, and an engine that cannot answer fails the job with a clear message."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from distill.records import parse_record
from distill.tables import TABLES, merge_new

from tests.conftest import cli_overrides, run_cli

QUERIES = [
    {"id": "m1", "category": "math", "query": "What is 2 + 3?", "reference_answer": "5"},
    {"id": "m2", "category": "math", "query": "What is 7 * 6?", "reference_answer": "42"},
    {"id": "if1", "category": "instruction_following", "query": "Describe the sea without commas.",
     "constraints": {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}},
    {"id": "g1", "category": "general", "query": "Tell me about owls."},
    {"id": "c1", "category": "code", "query": "Read n and print n*2.",
     "test_cases": {"language": "python", "tests": [{"type": "stdio", "input": "4\n", "output": "8\n"},
                                                    {"type": "stdio", "input": "0\n", "output": "0\n"}]}},
]


def answer(text: str) -> str:
    return f"<think>\nworking\n</think>\n<answer>\n{text}\n</answer>"


CODE_OK = answer("```python\nprint(int(input()) * 2)\n```")
A = [  # teacher-a: m1 passes at attempt 3; m2 never passes; the rest pass at once
    ("m1", 1, answer("\\boxed{4}")), ("m1", 2, answer("\\boxed{6}")), ("m1", 3, answer("\\boxed{5}")),
    ("m1", 4, answer("\\boxed{5}")),
    *[("m2", i, answer(f"\\boxed{{{30 + i}}}")) for i in range(1, 6)],
    ("if1", 1, answer("The sea is wide and blue.")), ("g1", 1, answer("Owls hunt at night.")),
    ("g1", 2, answer("never asked for")), ("c1", 1, CODE_OK),
]
B = [("m1", 1, answer("\\boxed{5}"))]  # teacher-b has one response only: the rest stop as "no response"


def write_teacher(path, rows):
    path.write_text("".join(json.dumps({"source": "t", "id": q, "attempt": a, "response": r}) + "\n"
                            for q, a, r in rows))
    return str(path)


@pytest.fixture
def setup(spark, cfg, tmp_path):
    """Kept queries in the warehouse, and a config with two replay teachers."""
    now = datetime.now(timezone.utc)
    rows = []
    for q in QUERIES:
        row = parse_record(q, "t").row
        rows.append({**row, "status": "kept", "ingest_run_id": "r0", "ingested_at": now})
    merge_new(spark, cfg, "queries", spark.createDataFrame(rows, TABLES["queries"].ddl.replace(" not null", "")))
    conf = {
        "teachers": [
            {"name": "teacher-a", "engine": "replay", "model": write_teacher(tmp_path / "a.jsonl", A)},
            {"name": "teacher-b", "engine": "replay", "model": write_teacher(tmp_path / "b.jsonl", B)},
        ],
        "generate": {"max_attempts": 4, "accept_no_verifier": True, "partitions": 2},
        "verify": {"math": {"timeout_s": 10.0, "workers": 1}, "code": {"workers": 1}},
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return ["--conf", str(path), *cli_overrides(cfg)]


def ledger(spark, cfg):
    rows = spark.read.format("delta").load(f"{cfg.warehouse}/attempts").join(
        spark.read.format("delta").load(f"{cfg.warehouse}/queries").select("query_id", "source_id"), "query_id"
    ).select("source_id", "teacher", "attempt", "verify_status", "verify_score", "accepted", "run_id").collect()
    return sorted((r.source_id, r.teacher, r.attempt, r.verify_status, r.verify_score, r.accepted, r.run_id)
                  for r in rows)


def outcome(rows):
    return [r[:6] for r in rows]


EXPECTED = [
    ("c1", "teacher-a", 1, "ok", 1.0, True),
    ("g1", "teacher-a", 1, "no_verifier", 0.0, True),
    ("if1", "teacher-a", 1, "ok", 1.0, True),
    ("m1", "teacher-a", 1, "ok", 0.0, False),
    ("m1", "teacher-a", 2, "ok", 0.0, False),
    ("m1", "teacher-a", 3, "ok", 1.0, True),
    ("m1", "teacher-b", 1, "ok", 1.0, True),
    ("m2", "teacher-a", 1, "ok", 0.0, False),
    ("m2", "teacher-a", 2, "ok", 0.0, False),
    ("m2", "teacher-a", 3, "ok", 0.0, False),
    ("m2", "teacher-a", 4, "ok", 0.0, False),
]


def last_run(spark, cfg):
    return spark.read.format("delta").load(f"{cfg.warehouse}/runs").where("job = 'generate'").orderBy(
        "started_at", ascending=False).first()


def test_loop_stops_at_the_passing_attempt_and_respects_max_attempts(spark, cfg, setup):
    assert run_cli("generate", *setup) == 0
    assert outcome(ledger(spark, cfg)) == EXPECTED
    run = last_run(spark, cfg)
    assert run.counts["teacher-a.generated"] == 10 and run.counts["teacher-b.generated"] == 1
    assert run.counts["teacher-a.accepted_total"] == 4 and run.counts["teacher-a.attempts_total"] == 10
    # a second run has nothing to do: no generation, no verification
    assert run_cli("generate", *setup) == 0
    again = last_run(spark, cfg)
    assert again.counts.get("teacher-a.generated", 0) == 0 and again.counts["verified"] == 0
    assert outcome(ledger(spark, cfg)) == EXPECTED


@pytest.mark.slow
def test_max_attempts_is_respected(spark, cfg, setup):
    assert run_cli("generate", *setup, "--set", "generate.max_attempts=2") == 0
    rows = outcome(ledger(spark, cfg))
    assert [r for r in rows if r[0] in ("m1", "m2") and r[1] == "teacher-a"] == [
        ("m1", "teacher-a", 1, "ok", 0.0, False), ("m1", "teacher-a", 2, "ok", 0.0, False),
        ("m2", "teacher-a", 1, "ok", 0.0, False), ("m2", "teacher-a", 2, "ok", 0.0, False)]
    # raising the cap later continues where the ledger stops: attempts 3 and 4 only
    assert run_cli("generate", *setup, "--set", "generate.max_attempts=4") == 0
    assert outcome(ledger(spark, cfg)) == EXPECTED


@pytest.mark.slow
@pytest.mark.parametrize("point", ["generate.staged", "generate.merged"])
def test_a_crash_mid_round_then_a_rerun_loses_and_repeats_nothing(spark, cfg, setup, monkeypatch, point):
    import distill.faults
    import distill.generation  # imported before the patch, so that undo() puts the real crash_point back

    class Killed(BaseException):  # not an Exception: nothing in the job may catch it, as with SIGKILL
        pass

    reached = []

    def crash(name):
        reached.append(name)
        if name == point and reached.count(name) == 2:  # in round 2
            raise Killed

    monkeypatch.setattr(distill.faults, "crash_point", crash)
    monkeypatch.setattr(distill.generation, "crash_point", crash)
    with pytest.raises(Killed):
        run_cli("generate", *setup)
    before = ledger(spark, cfg)
    monkeypatch.undo()
    assert run_cli("generate", *setup) == 0
    after = ledger(spark, cfg)
    assert outcome(after) == EXPECTED
    keys = [r[:3] for r in after]
    assert len(keys) == len(set(keys))
    # every attempt stored before the crash is still there, untouched by the second run (same run_id)
    first_run = {r[:3]: r[6] for r in before}
    assert all({r[:3]: r[6] for r in after}[k] == v for k, v in first_run.items())


@pytest.mark.slow
def test_a_new_verifier_version_reverifies_without_regenerating(spark, cfg, setup, monkeypatch, tiny_reward_model):
    assert run_cli("generate", *setup) == 0
    import distill.verifiers.ifeval as ifeval

    monkeypatch.setattr(ifeval, "VERSION", "2-test")
    assert run_cli("generate", *setup) == 0
    run = last_run(spark, cfg)
    assert run.counts["verified"] == 1 and run.counts.get("teacher-a.generated", 0) == 0
    versions = spark.read.format("delta").load(f"{cfg.warehouse}/attempts").where(
        "verifier = 'ifeval'").select("verifier_version").collect()
    assert [r.verifier_version for r in versions] == ["2-test"]

    # a reward model for `general` (a verifier that loads a model: verified in a pass of its own, in Spark
    # tasks): the one general attempt is verified again by it, nothing is generated (anchors far below any
    # reward: every score is 1.0, so the attempt stays accepted)
    reward = ["--set", "verify.verifiers={general: reward-model}", "--set",
              f"verify.reward_model={{model: {tiny_reward_model}, calibration: anchors, anchors: [-1000, -999]}}"]
    assert run_cli("generate", *setup, *reward) == 0
    run = last_run(spark, cfg)
    assert run.counts["verified"] == 1 and run.counts.get("teacher-a.generated", 0) == 0
    (g1,) = spark.read.format("delta").load(f"{cfg.warehouse}/attempts").where("verifier = 'reward-model'").collect()
    assert (g1.attempt, g1.verify_status, g1.verify_score, g1.accepted) == (1, "ok", 1.0, True)
    assert set(json.loads(g1.verify_detail)) == {"reward", "tokens", "truncated"}


def test_an_engine_that_cannot_answer_fails_the_job_clearly(spark, cfg, setup, capsys):
    args = [*setup, "--set", "teachers=[{name: t, engine: openai, model: m, engine_args: "
            "{base_url: 'http://127.0.0.1:9/v1', max_retries: 0}}]"]
    assert run_cli("generate", *args) == 1
    err = capsys.readouterr().err
    assert "teacher 't': all 5 requests failed" in err and "ConnectError" in err
    assert spark.read.format("delta").load(f"{cfg.warehouse}/attempts").count() == 0


def test_a_missing_replay_file_is_a_clear_error(spark, cfg, setup, capsys):
    args = [*setup, "--set", "teachers=[{name: t, engine: replay, model: /nonexistent/r.jsonl}]"]
    assert run_cli("generate", *args) == 2  # a config error, before any table is touched
    assert "config error: teachers.0.model: no such file or folder '/nonexistent/r.jsonl'" in capsys.readouterr().err
    assert not (Path(cfg.warehouse) / "attempts").exists()


def test_the_same_loop_with_a_fixed_sample_count_asks_every_row_k_times(spark, cfg, setup, tmp_path):
    """distill.generation's loop with evaluate's stop rule: attempts 1..samples of every row, accepted or
    not (g1 passes at once and still gets its second; m2 never passes and gets no more than two); a row the
    replay file has no more answers for stays short. A second run asks nothing."""
    from distill.config import load_config
    from distill.generation import FixedSamples, Ledger, run_rounds, verify_spec
    from distill.runs import RunRecorder
    from distill.stages import generate as st
    from pyspark.sql import functions as F

    run_cfg = load_config(setup[1], setup[3::2])
    work = (spark.read.format("delta").load(f"{cfg.warehouse}/queries")
            .select("query_id", "source_id", "category", "messages", "reference_answer", "test_cases",
                    "constraints").withColumn("samples", F.lit(2)))
    attempts = Ledger("attempts", lambda df: st.accepted(df, True, 0.9), accept_no_verifier=True)
    for generated in (9, 0):  # teacher-a has 2 answers for m1, m2 and g1, 1 for if1 and c1; teacher-b 1 for m1
        with RunRecorder(spark, run_cfg, "generate") as rec:
            run_rounds(spark, run_cfg, rec, attempts, run_cfg.teachers, work, FixedSamples(rounds=2),
                       verify_spec(spark, run_cfg.verify), 2, 8)
        assert rec.counts.get("teacher-a.generated", 0) + rec.counts.get("teacher-b.generated", 0) == generated
    assert outcome(rows := ledger(spark, cfg)) == [
        ("c1", "teacher-a", 1, "ok", 1.0, True),
        ("g1", "teacher-a", 1, "no_verifier", 0.0, True),
        ("g1", "teacher-a", 2, "no_verifier", 0.0, True),
        ("if1", "teacher-a", 1, "ok", 1.0, True),
        ("m1", "teacher-a", 1, "ok", 0.0, False),
        ("m1", "teacher-a", 2, "ok", 0.0, False),
        ("m1", "teacher-b", 1, "ok", 1.0, True),
        ("m2", "teacher-a", 1, "ok", 0.0, False),
        ("m2", "teacher-a", 2, "ok", 0.0, False),
    ], rows
