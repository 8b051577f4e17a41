"""Report stages on inline `attempts` / `sft` rows: every figure equals the same figure computed here in
plain Python from the same rows."""

from __future__ import annotations

import math
import statistics

import pytest
from distill.stages import report as st

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
