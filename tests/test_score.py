"""score, curate and export on real Spark and Delta over inline `queries` and `attempts`: the first accepted
attempt of each pair lands in `sft`; every score equals the plain-Python scorer on the same text; the Spark
corpus n-gram count equals the reference; the n-gram rules bite on both sides of the paper's thresholds; a
re-run scores nothing; curate re-decides from stored scores only; export round-trips through `datasets`."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from distill.records import parse_record
from distill.scorers import ngrams, structure
from distill.stages.generate import conversation
from distill.tables import TABLES, merge_new

from tests.conftest import ROOT, cli_overrides, run_cli

PROMPT = "Think, then answer."
SPAN = " ".join(f"w{i}" for i in range(20))  # one 20-token n-gram


def answer(text: str, think: str = "working") -> str:
    return f"<think>\n{think}\n</think>\n<answer>\n{text}\n</answer>"


def separated(k: int) -> str:
    """SPAN k times, each copy followed by a unique token: SPAN occurs k times, every other 20-gram once."""
    return " ".join(f"{SPAN} sep{i}" for i in range(k))


# (query, teacher, attempt, response, accepted, finish_reason)
ATTEMPTS = [
    ("q0", "teacher-a", 1, answer("wrong"), False, "stop"),
    ("q0", "teacher-a", 2, answer("right one"), True, "stop"),     # first accepted: attempt 2
    ("q0", "teacher-a", 3, answer("also right"), True, "stop"),
    ("q1", "teacher-a", 1, "no tags at all", True, "stop"),        # structure: no_think
    ("q2", "teacher-a", 1, answer("cut off"), True, "length"),     # structure: truncated
    ("q3", "teacher-a", 1, answer(separated(21)), True, "stop"),   # a loop: SPAN 21 times in one response
    ("q4", "teacher-a", 1, answer(separated(20)), True, "stop"),   # 20 times: not a loop
    ("q5", "teacher-a", 1, answer("never accepted"), False, "stop"),
    # teacher-b: SPAN once in each of 21 responses (template-like: more than 20 responses share it)
    *[(f"t{i}", "teacher-b", 1, answer(f"intro{i} {SPAN} outro{i}"), True, "stop") for i in range(21)],
    # teacher-c: SPAN once in each of 20 responses (not more than 20)
    *[(f"t{i}", "teacher-c", 1, answer(f"intro{i} {SPAN} outro{i}"), True, "stop") for i in range(20)],
]
QUERY_IDS = sorted({a[0] for a in ATTEMPTS})


def query_messages(source_id: str) -> list[dict]:
    if source_id == "q0":  # a query with its own system message: the teacher's prompt is merged into it
        return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is q0?"}]
    return [{"role": "user", "content": f"Question {source_id}?"}]


@pytest.fixture
def warehouse(spark, cfg, tiny_model, tmp_path):
    """queries + attempts in the warehouse, and CLI args with the tiny model as the reference."""
    return inline_warehouse(spark, cfg, tiny_model, tmp_path)


def inline_warehouse(spark, cfg, tiny_model, tmp_path) -> dict:
    """The `warehouse` fixture's work, for fixtures of a wider scope."""
    now = datetime.now(timezone.utc)
    ids, rows = {}, []
    for q in QUERY_IDS:
        row = parse_record({"id": q, "category": "general", "messages": query_messages(q)}, "t").row
        ids[q] = row["query_id"]
        rows.append({**row, "status": "kept", "ingest_run_id": "r0", "ingested_at": now})
    merge_new(spark, cfg, "queries", spark.createDataFrame(rows, TABLES["queries"].ddl.replace(" not null", "")))
    attempts = [{"query_id": ids[q], "teacher": t, "attempt": a, "category": "general", "engine": "replay",
                 "model": "m", "seed": 1, "system_prompt": PROMPT if q != "q1" else None, "response": r,
                 "finish_reason": f, "tokens_in": 10, "tokens_out": 5, "gen_seconds": 0.1, "run_id": "g0",
                 "generated_at": now, "verify_score": 1.0 if ok else 0.0, "verify_status": "ok",
                 "verifier": "v", "verifier_version": "1", "accepted": ok}
                for q, t, a, r, ok, f in ATTEMPTS]
    merge_new(spark, cfg, "attempts", spark.createDataFrame(attempts, TABLES["attempts"].ddl.replace(" not null", "")))
    conf = {"score": {"perplexity": {"model": str(tiny_model), "batch_size": 4}, "partitions": 2},
            "curate": {"max_tokens": 100000}}
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(conf))
    return {"args": ["--conf", str(path), *cli_overrides(cfg)], "ids": ids, "model": tiny_model}


def sft(spark, cfg) -> dict:
    rows = spark.read.format("delta").load(f"{cfg.warehouse}/sft").collect()
    return {(r.query_id, r.teacher): r.asDict(recursive=True) for r in rows}


def runs(spark, cfg, job: str):
    return spark.read.format("delta").load(f"{cfg.warehouse}/runs").where(f"job = '{job}'").orderBy(
        "started_at").collect()


def expected_rows(ids) -> dict:
    """(query_id, teacher) -> the attempt sft must hold: the first accepted one."""
    out = {}
    for q, t, a, r, ok, f in ATTEMPTS:
        key = (ids[q], t)
        if ok and key not in out:
            out[key] = (q, a, r, f)
    return out


def test_score_fills_sft_with_the_first_accepted_attempt_and_exact_scores(spark, cfg, warehouse):
    from distill.scorers.perplexity import TransformersScorer
    from transformers import AutoTokenizer

    assert run_cli("score", *warehouse["args"]) == 0
    got, want = sft(spark, cfg), expected_rows(warehouse["ids"])
    assert set(got) == set(want)
    tokenizer = AutoTokenizer.from_pretrained(warehouse["model"])
    scorer = TransformersScorer(warehouse["model"], batch_size=1)
    by_teacher: dict[str, list] = {}
    for key, (q, attempt, response, finish) in want.items():
        row = got[key]
        by_teacher.setdefault(key[1], []).append((key, response))
        messages = conversation(PROMPT if q != "q1" else "", query_messages(q))
        assert (row["attempt"], row["response"], row["finish_reason"]) == (attempt, response, finish)
        assert row["messages"] == messages
        s = structure.structure(response, finish)
        assert (row["structure_ok"], row["structure_reason"]) == (s.ok, s.reason)
        loop = ngrams.repetition(response)
        assert row["ngram_max_repeat"] == loop.max_repeat
        assert row["ngram_repeat_fraction"] == pytest.approx(loop.repeated_fraction)
        assert row["n_tokens"] == len(tokenizer(response, add_special_tokens=False)["input_ids"])
        direct = scorer.score([(messages, response)])[0]
        assert row["ppl"] == pytest.approx(direct.ppl, rel=1e-4) and row["ppl_tokens"] == direct.n_response_tokens
        assert row["score_key"] and row["keep"] is None
    for teacher, items in by_teacher.items():  # Spark's corpus count equals the plain-Python reference
        reference = ngrams.corpus_max([r for _, r in items])
        assert [got[k]["ngram_corpus_max"] for k, _ in items] == reference, teacher
    assert {got[(warehouse["ids"]["t0"], t)]["ngram_corpus_max"] for t in ("teacher-b", "teacher-c")} == {21, 20}
    run = runs(spark, cfg, "score")[-1]
    assert run.counts["teacher-a.scored"] == 5 and run.counts["teacher-b.scored"] == 21
    assert run.counts["sft.inserted"] == len(want)


def test_a_rerun_scores_nothing_and_a_changed_ledger_scores_only_the_change(spark, cfg, warehouse):
    assert run_cli("score", *warehouse["args"]) == 0
    first = sft(spark, cfg)
    assert run_cli("score", *warehouse["args"]) == 0
    again = runs(spark, cfg, "score")[-1]
    assert again.counts == {"settled_before": 1} and sft(spark, cfg) == first  # the first run settled
    # q5 becomes accepted and q1's only attempt stops being accepted (e.g. accept rules changed)
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, f"{cfg.warehouse}/attempts")
    ids = warehouse["ids"]
    table.update(f"query_id = '{ids['q5']}'", {"accepted": "true"})
    table.update(f"query_id = '{ids['q1']}'", {"accepted": "false"})
    assert run_cli("score", *warehouse["args"]) == 0
    run = runs(spark, cfg, "score")[-1]
    assert run.counts["sft.inserted"] == 1 and run.counts["sft.removed"] == 1
    assert run.counts["teacher-a.scored"] == 1 and "teacher-b.scored" not in run.counts
    assert run.counts["teacher-a.corpus_rows"] == 5 and "teacher-b.corpus_rows" not in run.counts
    now = sft(spark, cfg)
    assert (ids["q1"], "teacher-a") not in now and now[(ids["q5"], "teacher-a")]["ppl"] > 0
    unchanged = [k for k in first if k in now and k[1] == "teacher-b"]
    assert all(now[k]["scored_at"] == first[k]["scored_at"] for k in unchanged)


def decisions(spark, cfg, ids) -> dict:
    names = {v: k for k, v in ids.items()}
    return {(names[q], t): (r["keep"], r["reject_reason"]) for (q, t), r in sft(spark, cfg).items()}


def test_curate_decides_by_the_rules_and_redecides_without_rescoring(spark, cfg, warehouse):
    ids, args = warehouse["ids"], warehouse["args"]
    assert run_cli("score", *args) == 0
    assert run_cli("curate", *args) == 0
    got = decisions(spark, cfg, ids)
    assert got[("q0", "teacher-a")] == (True, None)
    assert got[("q1", "teacher-a")] == (False, "structure:no_think")
    assert got[("q2", "teacher-a")] == (False, "structure:truncated")
    assert got[("q3", "teacher-a")] == (False, "repetition")   # 21 > 20 inside one response
    assert got[("q4", "teacher-a")] == (True, None)              # 20 is not more than 20
    assert {got[(f"t{i}", "teacher-b")] for i in range(21)} == {(False, "corpus_ngram")}  # 21 responses
    assert {got[(f"t{i}", "teacher-c")] for i in range(20)} == {(True, None)}              # 20 responses
    run = runs(spark, cfg, "curate")[-1]
    assert run.counts["teacher-c.kept"] == 20 and run.counts["teacher-b.rejected.corpus_ngram"] == 21
    assert run.table_versions["sft"] >= 0
    scored_before = {k: (r["ppl"], r["scored_at"]) for k, r in sft(spark, cfg).items()}

    # New thresholds: looser n-gram rules, a perplexity ceiling for teacher-a only.
    ppl_q0 = sft(spark, cfg)[(ids["q0"], "teacher-a")]["ppl"]
    ppl_q4 = sft(spark, cfg)[(ids["q4"], "teacher-a")]["ppl"]
    ceiling = (ppl_q0 + ppl_q4) / 2
    assert run_cli("curate", *args, "--set", "curate.repeat_max_count=21", "--set", "curate.corpus_max_count=21",
                   "--set", f"curate.max_perplexity_by_teacher={{teacher-a: {ceiling}}}") == 0
    got = decisions(spark, cfg, ids)
    low, high = sorted([("q0", ppl_q0), ("q4", ppl_q4)], key=lambda x: x[1])
    assert got[(low[0], "teacher-a")] == (True, None) and got[(high[0], "teacher-a")] == (False, "perplexity")
    assert got[("q3", "teacher-a")][1] != "repetition"
    assert {got[(f"t{i}", "teacher-b")] for i in range(21)} == {(True, None)}
    assert len(runs(spark, cfg, "score")) == 1  # nothing was scored again ...
    assert {k: (r["ppl"], r["scored_at"]) for k, r in sft(spark, cfg).items()} == scored_before  # ... or rewritten
    second = runs(spark, cfg, "curate")[-1]
    assert second.counts["redecided"] == 21 + 2 and second.table_versions["sft"] > run.table_versions["sft"]


def test_export_round_trips_through_datasets_and_pins_the_curated_version(spark, cfg, warehouse):
    import datasets

    ids, args = warehouse["ids"], warehouse["args"]
    names = {v: k for k, v in ids.items()}
    assert run_cli("score", *args) == 0
    assert run_cli("curate", *args) == 0
    curated = sft(spark, cfg)
    # New work after curate (scored, not yet curated) must not leak into the export.
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, f"{cfg.warehouse}/attempts").update(f"query_id = '{ids['q5']}'", {"accepted": "true"})
    assert run_cli("score", *args) == 0
    assert run_cli("export", *args) == 0
    root = Path(cfg.output_dir) / "export"
    assert sorted(p.name for p in root.iterdir()) == ["teacher-a", "teacher-b", "teacher-c"]
    assert json.loads((root / "teacher-b" / "manifest.json").read_text())["rows"] == 0  # all rejected
    manifest = json.loads((root / "teacher-a" / "manifest.json").read_text())
    assert manifest["sft_version"] == runs(spark, cfg, "curate")[-1].table_versions["sft"]
    assert manifest["rows"] == 2 and manifest["by_category"] == {"general": 2}
    for fmt, loader, suffix in (("jsonl", "json", "json"), ("parquet", "parquet", "parquet")):
        ds = datasets.load_dataset(loader, data_files=str(root / "teacher-a" / fmt / f"*.{suffix}"),
                                   split="train")
        rows = sorted(ds, key=lambda r: r["query_id"])
        want = sorted((r for r in curated.values() if r["teacher"] == "teacher-a" and r["keep"]),
                      key=lambda r: r["query_id"])
        assert [names[r["query_id"]] for r in rows] == [names[r["query_id"]] for r in want] == ["q0", "q4"]
        for got, w in zip(rows, want, strict=True):
            assert got["messages"] == [*w["messages"], {"role": "assistant", "content": w["response"]}]
            assert got["messages"][-1]["content"].startswith("<think>")
            assert (got["teacher"], got["attempt"], got["category"], got["source"]) == \
                ("teacher-a", w["attempt"], "general", "t")
            assert got["verify_score"] == w["verify_score"] and math.isclose(got["ppl"], w["ppl"])
            assert got["n_tokens"] == w["n_tokens"]
    teacher_c = json.loads((root / "teacher-c" / "manifest.json").read_text())
    assert teacher_c["rows"] == 20 and set(teacher_c["files"]) == {"jsonl", "parquet"}

    # Again: the same snapshot is not written again; a teacher's export that lost a file is
    assert run_cli("export", *args) == 0
    assert runs(spark, cfg, "export")[-1].counts == {"teacher-a.unchanged": 2, "teacher-b.unchanged": 0,
                                                     "teacher-c.unchanged": 20}
    assert json.loads((root / "teacher-a" / "manifest.json").read_text()) == manifest
    (root / "teacher-c" / teacher_c["files"]["jsonl"][0]).unlink()
    assert run_cli("export", *args) == 0
    assert runs(spark, cfg, "export")[-1].counts == {"teacher-a.unchanged": 2, "teacher-b.unchanged": 0,
                                                     "teacher-c.exported": 20}


def test_export_before_curate_and_score_without_its_model_are_clear_errors(spark, cfg, warehouse, capsys):
    args = warehouse["args"]
    assert run_cli("score", *args, "--set", "score.perplexity.model=/nonexistent/model") != 0
    assert "score.perplexity.model: no model at '/nonexistent/model'" in capsys.readouterr().err
    assert run_cli("score", *args) == 0
    assert run_cli("export", *args) != 0
    assert "no successful curate run yet" in capsys.readouterr().err


def test_the_spark_conversation_equals_the_one_the_teacher_was_sent(spark):
    from distill.stages.score import conversation as spark_conversation
    from pyspark.sql import functions as F

    cases = [
        (PROMPT, [{"role": "user", "content": "hi"}]),
        (PROMPT, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "yo"}, {"role": "user", "content": "and?"}]),
        (PROMPT, [{"role": "system", "content": "only a system turn"}]),
        ("", [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]),
        (None, [{"role": "user", "content": "hi"}]),
    ]
    df = spark.createDataFrame([(i, p, m) for i, (p, m) in enumerate(cases)],
                               "i int, p string, m array<struct<role:string,content:string>>")
    got = {r.i: [x.asDict() for x in r.c] for r in df.select("i", spark_conversation(F.col("p"), F.col("m"))
                                                              .alias("c")).collect()}
    assert got == {i: conversation(p or "", m) for i, (p, m) in enumerate(cases)}


@pytest.mark.slow
def test_crashes_mid_score_then_a_rerun_end_as_an_uninterrupted_run(spark, cfg, warehouse, monkeypatch):
    class Killed(BaseException):  # not an Exception: nothing in the job may catch it, as with SIGKILL
        pass

    # the first run dies with sft's rows selected and none scored; the re-run, with them scored and the corpus
    # n-grams not counted; the third ends
    for point in ("score.selected", "score.scored"):
        def crash(name, point=point):
            if name == point:
                raise Killed

        monkeypatch.setattr("jobs.score.crash_point", crash)
        with pytest.raises(Killed):
            run_cli("score", *warehouse["args"])
        monkeypatch.undo()
    assert run_cli("score", *warehouse["args"]) == 0
    stable = ("attempt", "response", "messages", "n_tokens", "ppl", "structure_reason", "ngram_max_repeat",
              "ngram_corpus_max")
    def view(r):  # perplexity to 6 digits: batches padded differently differ in the last float bits
        return tuple(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in stable)

    got = {k: view(r) for k, r in sft(spark, cfg).items()}
    assert len(got) == len(expected_rows(warehouse["ids"]))
    assert all(r["score_key"] and r["corpus_key"] for r in sft(spark, cfg).values())
    # the same as a clean run in a fresh warehouse ...
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, f"{cfg.warehouse}/sft").delete()
    assert run_cli("score", *warehouse["args"]) == 0
    clean = {k: view(r) for k, r in sft(spark, cfg).items()}
    assert got == clean


@pytest.mark.slow
def test_the_vllm_reference_in_spark_agrees_with_transformers_and_a_new_engine_rescores(spark, cfg, warehouse):
    window = ["--set", "score.perplexity.max_tokens=1024"]
    assert run_cli("score", *warehouse["args"], *window) == 0
    via_hf = {k: r["ppl"] for k, r in sft(spark, cfg).items()}
    engine_args = "{kv_cache_memory_bytes: 67108864, max_model_len: 1025, dtype: float32, seed: 0}"
    assert run_cli("score", *warehouse["args"], *window, "--set", "score.perplexity.engine=vllm",
                   "--set", f"score.perplexity.engine_args={engine_args}") == 0
    run = runs(spark, cfg, "score")[-1]
    assert sum(v for k, v in run.counts.items() if k.endswith(".scored")) == len(via_hf)  # a new key: all again
    via_vllm = {k: r["ppl"] for k, r in sft(spark, cfg).items()}
    assert via_vllm.keys() == via_hf.keys()
    for k, ppl in via_hf.items():
        assert via_vllm[k] == pytest.approx(ppl, rel=1e-3), k


def test_the_reference_model_trained_in_a_task_is_the_one_trained_in_process(sample_run, tmp_path, monkeypatch):
    """The embedded default's score trains its tiny reference model in one Spark task with all the cores
    (distill.scoring.train_tiny_in_a_task); the sample run's model has the very weights that train_tiny_model
    makes here, in this process, from the same bundled responses."""
    from distill.config import load_config
    from distill.tiny_model import texts_from_files, train_tiny_model

    monkeypatch.chdir(ROOT)  # the embedded default's paths are relative to the project
    files = load_config(ROOT / "conf" / "local.yaml").score.perplexity.build_tiny_from
    here = train_tiny_model(tmp_path / "reference", texts_from_files(files))
    trained = sample_run.reference / "model.safetensors"
    assert trained.read_bytes() == (here / "model.safetensors").read_bytes()
