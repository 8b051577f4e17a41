"""The math reference audit: its rules on one query's answers (real math-verify, in the verifier's pool), and in
`prepare` on a copy of the sample run whose references we planted wrong."""

from __future__ import annotations

import json
from functools import partial

import pytest
from distill.config import ConfigError, ReferenceAuditConfig, build_section
from distill.reference_audit import (
    AGREES,
    DISAGREES,
    DISPUTED,
    NO_ANSWERS,
    NO_MAJORITY,
    PROPOSED,
    audit,
    decide,
    final_answer,
    group_answers,
)
from distill.verifiers.math import equivalent

SAME = partial(equivalent, workers=2, timeout_s=10.0)
RULES = ReferenceAuditConfig()


def said(answer: str) -> str:
    return f"<think>\nworking\n</think>\n<answer>\nSo the result is \\boxed{{{answer}}}.\n</answer>"


def test_final_answer_is_what_the_math_verifier_extracts():
    assert final_answer(said("2\\sqrt{2}")) == "2\\sqrt{2}"
    assert final_answer("<think>x</think><answer>The answer is 7.</answer>") == "7"
    assert final_answer("<think>x</think><answer>I could not work it out, sorry about that, truly. " * 3
                        + "</answer>") is None
    assert final_answer(None) is None


def test_equal_answers_in_different_spellings_form_one_group():
    groups = group_answers([("a", "1/2"), ("b", "0.5"), ("c", "\\frac{1}{2}"), ("a", "3"), ("b", "1/2")], SAME)
    assert [(g.answer, g.votes, sorted(g.teachers)) for g in groups] == [("1/2", 4, ["a", "b", "c"]),
                                                                         ("3", 1, ["a"])]


def test_a_clear_majority_against_the_reference_disagrees():
    responses = [("a", said("5")), ("b", said("5")), ("c", said("5.0")), ("a", said("6"))]
    assert audit("7", responses, RULES, SAME) == {
        "attempts": 4, "answers": 4, "majority_answer": "5", "votes": 3, "share": 0.75, "teachers": 3,
        "status": DISAGREES}


def test_a_reference_the_majority_confirms_in_another_spelling_agrees():
    responses = [("a", said("\\frac{1}{2}")), ("b", said("0.5")), ("c", said("1/2"))]
    assert audit("0.5", responses, RULES, SAME)["status"] == AGREES


@pytest.mark.parametrize("responses, why", [
    ([("a", said("5"))] * 4, "one teacher's repeated answer is no majority (min_teachers 2)"),
    ([("a", said("5")), ("b", said("5")), ("c", said("6")), ("c", said("8"))], "2 votes < min_votes 3"),
    ([("a", said("5")), ("b", said("5")), ("c", said("5")), ("a", said("6")), ("b", said("8")), ("c", said("9"))],
     "a share of 0.5 < min_share 0.6"),
])
def test_without_a_clear_majority_nothing_is_proposed(responses, why):
    assert audit("7", responses, RULES, SAME)["status"] == NO_MAJORITY, why


def test_attempts_without_a_final_answer_are_not_votes():
    row = audit("7", [("a", "<think>hm</think>"), ("b", None)], RULES, SAME)
    assert (row["status"], row["attempts"], row["answers"], row["share"]) == (NO_ANSWERS, 2, 0, None)


def test_the_judge_decides_between_proposed_and_disputed():
    assert decide(["5", "5", "x+1"], None, SAME) == [PROPOSED] * 3  # no judge: the majority proposes
    assert decide(["5", "1/2", "x+1"], ["5.0", "0.5", "x+2"], SAME) == [PROPOSED, PROPOSED, DISPUTED]
    assert decide(["5"], [None], SAME) == [DISPUTED]  # a judge that gave no answer does not side with anyone


def test_the_judge_solves_each_question_itself_in_one_batch():
    from distill.config import SamplingConfig
    from distill.verifiers.judge import Judge

    from tests.test_judge import Scripted

    engine = Scripted(["<think>\\boxed{9}?</think>So it is \\boxed{5}.", "no idea", "ERROR:down"])
    calls = []
    engine.generate = lambda requests, generate=engine.generate: calls.append(len(requests)) or generate(requests)
    assert Judge(engine, {}, SamplingConfig()).solve(["q1", "q2", "q3"]) == ["5", None, None]
    assert calls == [3] and "q1" in engine.prompts[0] and "\\boxed{}" in engine.prompts[0]


def test_a_replayed_judge_in_spark_tasks_sides_with_the_majority_or_disputes_it(spark, tmp_path):
    from distill.stages.audit import ask_judge
    from distill.verifiers.judge import SOLVE_PROMPT

    questions = {"q1": "What is 2+3?", "q2": "What is 2*3?"}
    judge_says = {"q1": "5", "q2": "7"}  # the majority says 5 and 6
    replies = tmp_path / "judge.jsonl"
    replies.write_text("".join(json.dumps({"query": SOLVE_PROMPT.format(question=questions[q]),
                                           "response": f"Thinking. \\boxed{{{judge_says[q]}}}"}) + "\n"
                               for q in questions))
    judge = {"name": "judge", "engine": "replay", "model": str(replies), "engine_args": {"match": "text"}}
    rows = spark.createDataFrame(
        [(q, [{"role": "user", "content": questions[q]}], m) for q, m in (("q1", "5"), ("q2", "6"))],
        "query_id string, messages array<struct<role:string,content:string>>, majority_answer string")
    got = {r.query_id: (r.judge_answer, r.status) for r in ask_judge(rows, json.dumps(judge), 1, 10.0).collect()}
    assert got == {"q1": ("5", PROPOSED), "q2": ("7", DISPUTED)}


@pytest.mark.parametrize("key, value, message", [
    ("min_share", 0.5, "prepare.reference_audit.min_share: 0.5 is not in (0.5, 1]"),
    ("min_votes", 0, "prepare.reference_audit.min_votes: must be >= 1"),
    ("min_teachers", 0, "prepare.reference_audit.min_teachers: must be >= 1"),
])
def test_a_bad_audit_setting_names_its_key(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        build_section(ReferenceAuditConfig, {key: value}, "prepare.reference_audit")


# --- in prepare, on a copy of the sample run -----------------------------------------------------------------

# Wrong references planted in the copy; every sample teacher answers these right (5 and 2\sqrt{2}).
PLANTED = {"math-001": "7", "math-003": "3\\sqrt{3}"}
TRUE = {"math-001": "5", "math-003": "2\\sqrt{2}"}


@pytest.mark.slow
def test_the_audit_finds_planted_wrong_references_and_applying_reverifies_only_their_attempts(
        spark, tmp_path, sample_run, capsys, monkeypatch):
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from tests.conftest import ROOT, cli_overrides, make_config, run_cli
    from tests.test_incremental import last_counts, teacher_sum

    home = tmp_path / "audit"
    sample_run.copy(home, ("queries", "attempts"))
    queries = DeltaTable.forPath(spark, str(home / "warehouse" / "queries"))
    for source_id, wrong in PLANTED.items():
        queries.update(F.col("source_id") == source_id, {"reference_answer": F.lit(wrong)})
    cfg = make_config(home)
    args = ["--conf", str(ROOT / "conf/local.yaml"), *cli_overrides(cfg)]
    ids = {r.source_id: r.query_id for r in queries.toDF().where(F.col("source_id").isin(*PLANTED)).collect()}

    def attempts():
        return {tuple(r[:3]): tuple(r[3:]) for r in spark.read.format("delta").load(
            str(home / "warehouse" / "attempts")).select(
            "query_id", "teacher", "attempt", "verify_status", "verify_score", "accepted", "verified_at").collect()}

    before = attempts()
    assert run_cli("prepare", *args) == 0
    audited = {r.query_id: r.asDict() for r in spark.read.format("delta").load(
        str(home / "warehouse" / "reference_audit")).collect()}
    math = spark.sql("SELECT count(DISTINCT q.query_id) FROM delta.`{}` q JOIN delta.`{}` a USING (query_id) "
                     "WHERE q.category = 'math' AND q.status = 'kept' AND q.reference_answer IS NOT NULL".format(
                         home / "warehouse" / "queries", home / "warehouse" / "attempts")).first()[0]
    assert len(audited) == math == last_counts(spark, "prepare")["audit.todo"] > len(PLANTED)
    flagged = {q: r for q, r in audited.items() if r["status"] not in (AGREES, NO_MAJORITY, NO_ANSWERS)}
    assert {q: r["status"] for q, r in flagged.items()} == {ids[s]: PROPOSED for s in PLANTED}
    for source_id, wrong in PLANTED.items():
        row = audited[ids[source_id]]
        mine = [v for k, v in before.items() if k[0] == ids[source_id]]
        # the majority is every attempt the true reference accepted, from all three teachers
        assert (row["reference"], row["attempts"], row["votes"], row["teachers"]) == (
            wrong, len(mine), sum(1 for v in mine if v[2]), 3), row
        assert SAME([(TRUE[source_id], row["majority_answer"])]) == [True], row
    assert attempts() == before  # proposing changes no verdict

    assert run_cli("prepare", *args) == 0  # nothing changed: nothing is audited again
    assert last_counts(spark, "prepare").get("audit.todo", 0) == 0

    # With a judge (a replayed one) every query is audited again (the judge is part of the audit's key), and the
    # judge is asked to solve only the two the majority disputes: it agrees with the majority on math-001 and
    # answers math-003 otherwise, which is then disputed, not proposed.
    from distill.verifiers.judge import SOLVE_PROMPT

    asked = {r.source_id: r.messages[-1].content for r in queries.toDF().where(
        F.col("source_id").isin(*PLANTED)).collect()}
    judge_says = {"math-001": "5", "math-003": "3"}
    replies = tmp_path / "judge.jsonl"
    replies.write_text("".join(json.dumps({"query": SOLVE_PROMPT.format(question=asked[s]),
                                           "response": f"Let me solve it. \\boxed{{{judge_says[s]}}}"}) + "\n"
                               for s in PLANTED))
    judge = f"verify.judge={{name: judge, engine: replay, model: {replies}, engine_args: {{match: text}}}}"
    assert run_cli("prepare", *args, "--set", judge) == 0
    assert last_counts(spark, "prepare")["audit.todo"] == math
    judged = {r.query_id: (r.status, r.judge_answer) for r in spark.read.format("delta").load(
        str(home / "warehouse" / "reference_audit")).where(F.col("judge_answer").isNotNull()).collect()}
    assert judged == {ids["math-001"]: (PROPOSED, "5"), ids["math-003"]: (DISPUTED, "3")}

    def references():
        return {r.source_id: r.reference_answer for r in spark.read.format("delta").load(
            str(home / "warehouse" / "queries")).where(F.col("source_id").isin(*PLANTED)).collect()}

    def crash(point):  # the job dies between its commits (in this process: an exception, not a kill)
        if point == "prepare.unverified":
            raise RuntimeError(f"crashed at {point}")

    apply = ("--set", "prepare.reference_audit.apply=true")
    monkeypatch.setattr("jobs.prepare.crash_point", crash)
    assert run_cli("prepare", *args, *apply) == 1
    assert references() == PLANTED  # the verdicts are gone, the references not replaced yet
    monkeypatch.undo()
    assert run_cli("prepare", *args, *apply) == 0  # the re-run applies the same revisions once more
    assert last_counts(spark, "prepare")["audit.revised"] == len(PLANTED)
    revised = references()
    assert revised == {s: audited[ids[s]]["majority_answer"] for s in PLANTED}
    statuses = {r.query_id: (r.status, r.reference) for r in spark.read.format("delta").load(
        str(home / "warehouse" / "reference_audit")).where(F.col("query_id").isin(*ids.values())).collect()}
    assert statuses == {ids[s]: ("applied", PLANTED[s]) for s in PLANTED}  # the old reference is kept
    from distill.stages.report import audit_counts

    report = audit_counts(spark.read.format("delta").load(str(home / "warehouse" / "reference_audit"))).collect()
    assert [(r.source, r.audited, r.proposed, r.disputed, r.revised) for r in report] == [
        ("sample", len(audited), 0, 0, len(PLANTED))]
    after = attempts()
    planted = {k for k in before if k[0] in ids.values()}
    assert all(after[k] == (None, None, None, None) for k in planted)
    assert {k: v for k, v in after.items() if k not in planted} == {k: v for k, v in before.items()
                                                                      if k not in planted}

    capsys.readouterr()
    assert run_cli("generate", *args) == 0
    counts = last_counts(spark, "generate")
    assert counts["verified"] == len(planted) and teacher_sum(counts, "generated") == 0
    final = attempts()
    # against the revised reference, the planted queries' attempts get back the verdicts the true one gave them
    assert {k: v[:3] for k, v in final.items()} == {k: v[:3] for k, v in before.items()}
    assert {k for k in final if final[k][3] != before[k][3]} == planted  # and nothing else was verified again
    print(json.dumps({"planted": len(PLANTED), "audited": len(audited), "reverified": len(planted)}))
