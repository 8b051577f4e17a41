"""Report stages on inline `attempts` / `sft` rows: every figure equals the same figure computed here in
plain Python from the same rows. The student stages on inline `eval_results` / `eval_samples` / `students`
rows: Table 1 and 2 in long form with each kind of student's lineage (trained, evaluated under another name,
replayed with a teacher, external without one, no longer configured), adaptive lengths per difficulty level or
benchmark beside report.outputs, and the page's grids with incomplete results marked; every expectation is
written out by hand."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
from distill.report_html import student_grids
from distill.stages import report as st
from pyspark.testing import assertDataFrameEqual

ATTEMPTS = [  # query, teacher, category, attempt, accepted, tokens_out, gen_seconds, verify_score, status
    ("a", "t1", "math", 1, False, 100, 1.0, 0.0, "ok"),
    ("a", "t1", "math", 2, True, 120, 1.5, 1.0, "ok"),
    ("b", "t1", "math", 1, True, 3000, 4.0, 1.0, "ok"),
    ("c", "t1", "code", 1, False, 50, 0.5, 0.55, "ok"),
    ("c", "t1", "code", 2, False, 60, 0.5, None, "timeout"),
    ("a", "t2", "math", 1, True, 20000, 9.0, 1.0, "ok"),
    ("c", "t2", "code", 1, True, 900, 2.0, 0.95, "ok"),
]
SFT = [  # query, teacher, category, n_tokens, tokens_out, ppl, keep, reject_reason
    ("a", "t1", "math", 130, 120, 2.0, True, None),
    ("b", "t1", "math", None, 3000, 4.0, False, "perplexity"),
    ("a", "t2", "math", 21000, 20000, 3.0, False, "too_long"),
    ("c", "t2", "code", 1000, 900, None, None, None),
]


@pytest.fixture
def frames(spark):
    attempts = spark.createDataFrame(
        ATTEMPTS, "query_id string, teacher string, category string, attempt int, accepted boolean, tokens_out int, "
                  "gen_seconds double, verify_score double, verify_status string")
    sft = spark.createDataFrame(
        SFT, "query_id string, teacher string, category string, n_tokens int, tokens_out int, ppl double, "
             "keep boolean, reject_reason string")
    return attempts, sft


def groups(rows):
    out = {}
    for r in rows:
        for cat in (r[2], st.ALL):
            out.setdefault((r[1], cat), []).append(r)
    return out


def test_costs(frames):
    got = {(r.teacher, r.category): r.asDict() for r in st.costs(frames[0]).collect()}
    assert set(got) == {("t1", "math"), ("t1", "code"), ("t1", "all"), ("t2", "math"), ("t2", "code"), ("t2", "all")}
    for key, rows in groups(ATTEMPTS).items():
        pairs = {r[0] for r in rows}
        accepted = {r[0] for r in rows if r[4]}
        g = got[key]
        assert (g["pairs"], g["attempts"], g["accepted"]) == (len(pairs), len(rows), len(accepted))
        assert g["acceptance_rate"] == pytest.approx(len(accepted) / len(pairs))
        if accepted:
            assert g["attempts_per_accepted"] == pytest.approx(len(rows) / len(accepted))
            assert g["tokens_out_per_accepted"] == pytest.approx(sum(r[5] for r in rows) / len(accepted))
            assert g["engine_s_per_accepted"] == pytest.approx(sum(r[6] for r in rows) / len(accepted))
        else:
            assert g["attempts_per_accepted"] is None
    assert got[("t1", "all")]["attempts_per_accepted"] == pytest.approx(5 / 2)


def test_lengths_buckets_and_perplexity(frames):
    got = {(r.teacher, r.category): r.asDict() for r in st.lengths(frames[1]).collect()}
    for key, rows in groups(SFT).items():
        lens = [r[3] if r[3] is not None else r[4] for r in rows]
        ppls = [r[5] for r in rows if r[5] is not None]
        g = got[key]
        assert (g["responses"], g["kept"]) == (len(rows), sum(bool(r[6]) for r in rows))
        assert g["mean_tokens"] == pytest.approx(statistics.mean(lens))
        assert g["median_tokens"] == pytest.approx(statistics.median(lens))
        assert g["length_cv"] == pytest.approx(statistics.pstdev(lens) / statistics.mean(lens))
        shares = [sum(x < 1024 for x in lens), sum(1024 <= x <= 10240 for x in lens), sum(x > 10240 for x in lens)]
        assert [g[f"share_{b}"] for b in st.BUCKETS] == pytest.approx([s / len(lens) for s in shares])
        assert g["mean_ppl"] == (pytest.approx(statistics.mean(ppls)) if ppls else None)


def test_histograms_and_diversity(frames):
    attempts, sft = frames
    hist = st.length_histogram(sft)
    got = {(r.teacher, r.category, r.bin): (r.lo, r.hi, r["count"]) for r in hist.collect()}
    want = {}
    for (t, c), rows in groups(SFT).items():
        for r in rows:
            n = r[3] if r[3] is not None else r[4]
            b = int(math.floor(math.log2(n)))
            lo, hi, k = want.get((t, c, b), (2**b, 2 ** (b + 1), 0))
            want[(t, c, b)] = (lo, hi, k + 1)
    assert got == want
    bins = len({k[2] for k in want})
    div = {(r.teacher, r.category): r.length_entropy for r in st.diversity(hist).collect()}
    for t, c in groups(SFT):
        counts = [v[2] for k, v in want.items() if k[:2] == (t, c)]
        total = sum(counts)
        entropy = -sum(k / total * math.log(k / total) for k in counts) / math.log(bins)
        assert div[(t, c)] == pytest.approx(entropy)
    vh = {(r.teacher, r.category, r.score_bin, r.status): r["count"] for r in st.verify_histogram(attempts).collect()}
    assert vh[("t1", "math", 1.0, "ok")] == 2 and vh[("t1", "code", 0.5, "ok")] == 1
    assert vh[("t2", "code", 0.9, "ok")] == 1 and vh[("t1", "all", 0.0, "ok")] == 1
    assert ("t1", "code", None, "timeout") in vh


def test_rejects(frames):
    got = {(r.teacher, r.category, r.reason): r["count"] for r in st.rejects(frames[1]).collect()}
    assert got == {("t1", "math", "perplexity"): 1, ("t1", "all", "perplexity"): 1,
                   ("t2", "math", "too_long"): 1, ("t2", "all", "too_long"): 1,
                   ("t2", "code", "pending"): 1, ("t2", "all", "pending"): 1}


# --- students ----------------------------------------------------------------------------------------------

RESULTS = ("student string, benchmark string, difficulty string, difficulty_order int, complete boolean, "
           "pass_at_1 double, pass_at_1_stderr double, mean_tokens double")
STUDENTS_OUT = ("student string, benchmark string, pass_at_1 double, pass_at_1_stderr double, mean_tokens double, "
                "complete boolean, teachers array<string>, sft_version long, train_key string")


def test_student_results_take_the_all_row_and_each_students_lineage(spark):
    results = spark.createDataFrame([
        ("tiny-a", "math", "all", 0, True, 0.5, 0.1, 100.0),
        ("tiny-a", "math", "easy", 1, True, 0.75, 0.05, 80.0),  # a level: not in Table 1
        ("tiny-a", "code", "all", 0, False, 0.25, 0.2, 300.0),  # incomplete: kept, marked
        ("greedy-a", "math", "all", 0, True, 0.6, 0.0, 90.0),  # tiny-a's model under another name
        ("replay-r", "math", "all", 0, True, 0.9, 0.02, 400.0),  # replayed, config names its teacher
        ("tiny-b", "math", "all", 0, True, 0.1, 0.05, 50.0),  # configured as a replay: not the trained tiny-b
        ("old-s", "math", "all", 0, True, 0.3, 0.1, 70.0),  # no longer configured: found by name
        ("ext-e", "math", "all", 0, False, None, None, None),  # external, no teacher, nothing verified yet
    ], RESULTS)
    trained = spark.createDataFrame([("tiny-a", ["t1"], 4, "k-a"), ("tiny-b", ["t1"], 4, "k-b"),
                                     ("old-s", ["t2", "t3"], 2, "k-old")], st.STUDENT_LINEAGE)
    configured = spark.createDataFrame([("tiny-a", "tiny-a", None), ("greedy-a", "tiny-a", None),
                                        ("replay-r", None, "t2"), ("tiny-b", None, None), ("ext-e", None, None)],
                                       "student string, train string, teacher string")
    want = spark.createDataFrame([
        ("tiny-a", "math", 0.5, 0.1, 100.0, True, ["t1"], 4, "k-a"),
        ("tiny-a", "code", 0.25, 0.2, 300.0, False, ["t1"], 4, "k-a"),
        ("greedy-a", "math", 0.6, 0.0, 90.0, True, ["t1"], 4, "k-a"),
        ("replay-r", "math", 0.9, 0.02, 400.0, True, ["t2"], None, None),
        ("tiny-b", "math", 0.1, 0.05, 50.0, True, [], None, None),
        ("old-s", "math", 0.3, 0.1, 70.0, True, ["t2", "t3"], 2, "k-old"),
        ("ext-e", "math", None, None, None, False, [], None, None),
    ], STUDENTS_OUT)
    assertDataFrameEqual(st.student_results(results, trained, configured), want)


def test_student_results_without_a_students_table(spark):
    results = spark.createDataFrame([("replay-r", "math", "all", 0, True, 0.9, 0.02, 400.0)], RESULTS)
    configured = spark.createDataFrame([("replay-r", None, "t2")], "student string, train string, teacher string")
    got = st.student_results(results, spark.createDataFrame([], st.STUDENT_LINEAGE), configured)
    assertDataFrameEqual(got, spark.createDataFrame([("replay-r", "math", 0.9, 0.02, 400.0, True, ["t2"], None, None)],
                                                    STUDENTS_OUT))


SAMPLES = "student string, benchmark string, item_id string, sample int, difficulty string, tokens_out int"
ADAPTIVE = ("model string, task string, task_order int, responses long, mean_tokens double, "
            "median_tokens double")


@pytest.fixture
def eval_parts(spark):
    """`m` has levels (file order easy, medium, hard: not the alphabet's); `c` has none."""
    samples = spark.createDataFrame([
        ("s1", "m", "e1", 1, "easy", 10), ("s1", "m", "e1", 2, "easy", 20), ("s1", "m", "h1", 1, "hard", 100),
        ("s1", "m", "d1", 1, "medium", 50), ("s1", "c", "c1", 1, None, 7),
        ("s1", "c", "c1", 2, None, None),  # not counted yet: no length
        ("s2", "m", "e1", 1, "easy", 30), ("s2", "m", "h1", 1, "hard", 31),
        ("s2", "c", "c1", 1, None, 9), ("s2", "c", "c1", 2, None, 11),
    ], SAMPLES)
    results = spark.createDataFrame(
        [(s, "m", d, o) for s in ("s1", "s2") for d, o in (("all", 0), ("easy", 1), ("medium", 2), ("hard", 3))]
        + [(s, "c", "all", 0) for s in ("s1", "s2")],
        "student string, benchmark string, difficulty string, difficulty_order int")
    return st.eval_lengths(samples, results)


EVAL_ADAPTIVE = [
    ("s1", "c", 1, 1, 7.0, 7.0), ("s1", "m:easy", 2, 2, 15.0, 15.0), ("s1", "m:medium", 3, 1, 50.0, 50.0),
    ("s1", "m:hard", 4, 1, 100.0, 100.0),
    ("s2", "c", 1, 2, 10.0, 10.0), ("s2", "m:easy", 2, 1, 30.0, 30.0), ("s2", "m:hard", 4, 1, 31.0, 31.0),
]


def test_adaptive_lengths_from_eval_samples_per_level_or_benchmark(spark, eval_parts):
    assertDataFrameEqual(st.adaptive_lengths(eval_parts), spark.createDataFrame(EVAL_ADAPTIVE, ADAPTIVE))


def test_configured_outputs_come_after_the_eval_tasks_in_their_file_order(spark, eval_parts):
    outputs = spark.createDataFrame([("o1", "hard", 0, 40), ("o1", "easy", 1, 4), ("o1", "hard", 2, 60)],
                                    "model string, task string, seq long, n_tokens long")
    got = st.adaptive_lengths(eval_parts, st.output_lengths(outputs))
    want = [*EVAL_ADAPTIVE, ("o1", "hard", 5, 2, 50.0, 50.0), ("o1", "easy", 6, 1, 4.0, 4.0)]
    assertDataFrameEqual(got, spark.createDataFrame(want, ADAPTIVE))


def test_student_grids_mark_incomplete_figures_and_name_the_lineage():
    rows = pd.DataFrame([
        ("tiny-a", "math", 0.5, 0.1, 100.4, True, ["t1"], 4, "0123456789abcdef"),
        ("tiny-a", "code", 0.25, 0.2, 1300.0, False, ["t1"], 4, "0123456789abcdef"),
        ("replay-r", "math", 0.875, None, 40.0, True, ["t2", "t3"], None, None),
        ("ext-e", "code", None, None, None, False, [], None, None),
    ], columns=["student", "benchmark", "pass_at_1", "pass_at_1_stderr", "mean_tokens", "complete", "teachers",
                "sft_version", "train_key"])
    table1, table2 = student_grids(rows)
    columns = ["teachers", "sft version", "train key", "code", "math"]
    lineage = {"ext-e": ["–", "–", "–"], "replay-r": ["t2, t3", "–", "–"], "tiny-a": ["t1", "4", "01234567"]}
    assert list(table1.index) == list(table2.index) == ["ext-e", "replay-r", "tiny-a"]
    assert list(table1.columns) == list(table2.columns) == columns
    assert table1.to_dict("index") == {
        "ext-e": dict(zip(columns, [*lineage["ext-e"], "incomplete", "–"], strict=True)),
        "replay-r": dict(zip(columns, [*lineage["replay-r"], "–", "87.5"], strict=True)),
        "tiny-a": dict(zip(columns, [*lineage["tiny-a"], "incomplete (25.0 ± 20.0)", "50.0 ± 10.0"], strict=True)),
    }
    assert table2.to_dict("index") == {
        "ext-e": dict(zip(columns, [*lineage["ext-e"], "incomplete", "–"], strict=True)),
        "replay-r": dict(zip(columns, [*lineage["replay-r"], "–", "40"], strict=True)),
        "tiny-a": dict(zip(columns, [*lineage["tiny-a"], "incomplete (1,300)", "100"], strict=True)),
    }
