"""Evaluation metrics (distill.eval_metrics): the unbiased pass@k estimator against the exact binomial
formula, the k ladder, maj@k voting and its tie-break, and whole group summaries worked out by hand: a
complete replay-like set, an incomplete one, an all-wrong item, a code group without answers, token figures.
No Spark.
"""

import math
import random

import pytest
from distill.eval_metrics import ks_for, majority_correct, pass_at_k, summarize
from pytest import approx

# A replay-like group: 3 items x 4 samples, rows (sample_index, correct, tokens_out, stopped, answer).
#   a: all 4 correct, answer "5" every time                                  c = 4
#   b: correct, wrong, wrong, correct; answers "3", "4", "4", "3" (a 2-2 tie)  c = 2
#   c: wrong, correct, wrong, wrong; answers "1", "2", "1", None              c = 1
# Sample 3 of c ran into the token limit (stopped=False).
REPLAY = {
    "a": [(0, True, 10, True, "5"), (1, True, 20, True, "5"), (2, True, 30, True, "5"), (3, True, 40, True, "5")],
    "b": [(0, True, 50, True, "3"), (1, False, 60, True, "4"), (2, False, 70, True, "4"), (3, True, 80, True, "3")],
    "c": [(0, False, 100, True, "1"), (1, True, 200, True, "2"), (2, False, 300, True, "1"),
          (3, False, 1000, False, None)],
}


def test_summarize_replay_group_by_hand():
    # pass@1 = (4 + 2 + 1) / 12 = 7/12.
    # Per-index means of correct: s0 = (T,T,F) 2/3, s1 = (T,F,T) 2/3, s2 = (T,F,F) 1/3, s3 = (T,T,F) 2/3.
    #   Their mean is 7/12; deviations 1/12, 1/12, -3/12, 1/12; squares sum (1+1+9+1)/144 = 1/12;
    #   ddof=1 variance (1/12)/3 = 1/36, sd 1/6; stderr = (1/6)/sqrt(4) = 1/12.
    # ks_for(4) = [1, 2, 4].
    #   pass@1 per item c/n: 1, 1/2, 1/4 -> mean 7/12.
    #   pass@2 per item 1 - C(n-c,2)/C(4,2): a n-c=0 < 2 -> 1; b 1 - C(2,2)/6 = 5/6; c 1 - C(3,2)/6 = 1/2
    #     -> mean (6/6 + 5/6 + 3/6)/3 = 7/9.
    #   pass@4: n-c = 0, 2, 3, all < 4 -> every item 1 -> 1.
    # maj@4: a "5" correct; b tie "3"/"4", "3" seen first -> correct; c "1" beats "2" 2-1 (None never votes)
    #   -> wrong. 2/3.
    # Tokens sorted: 10 20 30 40 50 60 70 80 100 200 300 1000, sum 1960 -> mean 490/3; median (60+70)/2 = 65.
    #   Correct: 10 20 30 40 50 80 200 = 430 over 7; wrong: 60 70 100 300 1000 = 1530 over 5 = 306.
    # stop_ratio: 11 of 12.
    assert summarize(REPLAY, 4) == {
        "items": 3,
        "samples_min": 4,
        "samples_max": 4,
        "complete": True,
        "pass_at_1": approx(7 / 12),
        "pass_at_1_stderr": approx(1 / 12),
        "pass_at_k": {1: approx(7 / 12), 2: approx(7 / 9), 4: approx(1.0)},
        "maj_at_k": approx(2 / 3),
        "mean_tokens": approx(490 / 3),
        "median_tokens": approx(65.0),
        "mean_tokens_correct": approx(430 / 7),
        "mean_tokens_wrong": approx(306.0),
        "stop_ratio": approx(11 / 12),
    }


def test_summarize_does_not_depend_on_row_order():
    # Rows come out of Spark in any order. Rotated by one, item b reads "4", "4", "3", "3": the maj@4 tie must
    # still go to "3", the answer of sample 0, and items listed in another order change nothing.
    rotated = {item_id: REPLAY[item_id][1:] + REPLAY[item_id][:1] for item_id in reversed(list(REPLAY))}
    assert summarize(rotated, 4) == summarize(REPLAY, 4)


def test_summarize_incomplete_group_is_flagged_and_still_reported():
    # a: samples 0-3, all correct, answer "x".
    # b: only samples 0-2 (one missing): correct, wrong, wrong; answers "x", "y", "y".
    # c: four rows but index 1 twice and no index 2: correct, correct, wrong, wrong; answers "x", "x", "z", "z".
    # All tokens 10, all stopped.
    items = {
        "a": [(i, True, 10, True, "x") for i in range(4)],
        "b": [(0, True, 10, True, "x"), (1, False, 10, True, "y"), (2, False, 10, True, "y")],
        "c": [
            (0, True, 10, True, "x"), (1, True, 10, True, "x"), (1, False, 10, True, "z"), (3, False, 10, True, "z"),
        ],
    }
    # pass@1 = (4 + 1 + 2) / 11 = 7/11.
    # Per-index means over the rows with that index: s0 (T,T,T) 1; s1 (a T, b F, c T, c F) 1/2; s2 (a T, b F) 1/2;
    #   s3 (a T, c F) 1/2. Mean 5/8; deviations 3/8, -1/8 x3; squares (9+1+1+1)/64 = 3/16; /3 = 1/16; sd 1/4;
    #   stderr (1/4)/sqrt(4) = 1/8.
    # samples_min 3 -> ks_for(3) = [1, 2, 3]; (n, c) = a (4, 4), b (3, 1), c (4, 2).
    #   pass@1: 1, 1/3, 1/2 -> (6 + 2 + 3)/18 = 11/18.
    #   pass@2: a 1; b 1 - C(2,2)/C(3,2) = 2/3; c 1 - C(2,2)/C(4,2) = 5/6 -> (6 + 4 + 5)/18 = 5/6.
    #   pass@3: n-c = 0, 2, 2, all < 3 -> 1.
    # maj: a "x" correct; b "y" 2-1 wrong; c tie "x"/"z", "x" first -> correct. 2/3.
    assert summarize(items, 4) == {
        "items": 3,
        "samples_min": 3,
        "samples_max": 4,
        "complete": False,
        "pass_at_1": approx(7 / 11),
        "pass_at_1_stderr": approx(1 / 8),
        "pass_at_k": {1: approx(11 / 18), 2: approx(5 / 6), 3: approx(1.0)},
        "maj_at_k": approx(2 / 3),
        "mean_tokens": approx(10.0),
        "median_tokens": approx(10.0),
        "mean_tokens_correct": approx(10.0),
        "mean_tokens_wrong": approx(10.0),
        "stop_ratio": approx(1.0),
    }


@pytest.mark.parametrize(
    "indices, complete",
    [
        ([0, 1, 2, 3], True),
        ([3, 1, 0, 2], True),  # order does not matter
        ([0, 1, 2], False),  # one missing
        ([0, 1, 1, 3], False),  # duplicated index
        ([0, 1, 2, 4], False),  # index out of range
        ([0, 1, 2, 3, 4], False),  # one too many
    ],
)
def test_complete_needs_exactly_indices_0_to_expected(indices, complete):
    full = [(i, True, 1, True, "x") for i in range(4)]
    other = [(i, True, 1, True, "x") for i in indices]
    assert summarize({"full": full, "other": other}, 4)["complete"] is complete


def test_summarize_item_with_every_sample_wrong():
    # 4 wrong samples, answers "1", "1", "2", None. pass@1 0; per-index means 0,0,0,0 -> stderr 0.
    # pass@k: n-c = 4 >= k for every k, and 1 - C(4,k)/C(4,k) = 0. maj: "1" wins, wrong -> 0.
    # Tokens 4, 6, 8, 30: mean 48/4 = 12, median (6+8)/2 = 7; no correct sample -> None.
    items = {"q": [(0, False, 4, True, "1"), (1, False, 6, True, "1"), (2, False, 8, True, "2"),
                   (3, False, 30, False, None)]}
    assert summarize(items, 4) == {
        "items": 1,
        "samples_min": 4,
        "samples_max": 4,
        "complete": True,
        "pass_at_1": 0.0,
        "pass_at_1_stderr": 0.0,
        "pass_at_k": {1: 0.0, 2: 0.0, 4: 0.0},
        "maj_at_k": 0.0,
        "mean_tokens": 12.0,
        "median_tokens": 7.0,
        "mean_tokens_correct": None,
        "mean_tokens_wrong": 12.0,
        "stop_ratio": 0.75,
    }


def test_summarize_code_group_without_answers_and_one_sample():
    # Code: no normalized answers -> maj None. One sample per item -> one index -> stderr None, ks [1].
    # Tokens 5, 100, 7: mean 112/3, median 7 (odd count); correct 5 and 7 -> 6; wrong 100.
    items = {"p": [(0, True, 5, True, None)], "q": [(0, False, 100, False, None)], "r": [(0, True, 7, True, None)]}
    assert summarize(items, 1) == {
        "items": 3,
        "samples_min": 1,
        "samples_max": 1,
        "complete": True,
        "pass_at_1": approx(2 / 3),
        "pass_at_1_stderr": None,
        "pass_at_k": {1: approx(2 / 3)},
        "maj_at_k": None,
        "mean_tokens": approx(112 / 3),
        "median_tokens": 7.0,
        "mean_tokens_correct": 6.0,
        "mean_tokens_wrong": 100.0,
        "stop_ratio": approx(2 / 3),
    }


@pytest.mark.parametrize("items, expected_samples", [({}, 4), ({"q": []}, 4), ({"q": [(0, True, 1, True, "x")]}, 0)])
def test_summarize_refuses_empty_input(items, expected_samples):
    with pytest.raises(ValueError):
        summarize(items, expected_samples)


def test_pass_at_k_matches_the_exact_binomial_formula():
    # math.comb(n-c, k) is 0 when k > n-c, so the reference needs no special case.
    for n in range(1, 16):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == approx(exact, rel=1e-12, abs=1e-12), (n, c, k)


def test_pass_at_k_known_values_and_the_sure_case():
    # n=10, c=3, k=1 -> 3/10; k=2 -> 1 - C(7,2)/C(10,2) = 1 - 21/45 = 8/15.
    assert pass_at_k(10, 3, 1) == approx(3 / 10)
    assert pass_at_k(10, 3, 2) == approx(8 / 15)
    # n - c < k: every draw of k has a correct sample, exactly 1.0 (not 0.9999...).
    assert pass_at_k(10, 8, 3) == 1.0
    assert pass_at_k(5, 0, 5) == 0.0
    # Large n, where C(n, k) as a float would overflow: n=2000, c=1000, k=1 is c/n.
    assert pass_at_k(2000, 1000, 1) == approx(0.5)


@pytest.mark.parametrize("n, c, k", [(4, 1, 5), (4, 1, 0), (4, 1, -1), (4, 5, 2), (4, -1, 2), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_ks_for():
    assert [ks_for(n) for n in (0, 1, 2, 3, 4, 5, 8, 16, 20)] == [
        [],
        [1],
        [1, 2],
        [1, 2, 3],
        [1, 2, 4],
        [1, 2, 4, 5],
        [1, 2, 4, 8],
        [1, 2, 4, 8, 16],
        [1, 2, 4, 8, 16, 20],
    ]


@pytest.mark.parametrize(
    "answers, expected",
    [
        ([("a", True), ("b", False), ("a", True)], True),  # plain majority
        ([("b", False), ("a", True), ("a", True), ("b", False)], False),  # tie: "b" seen first
        ([("a", True), ("b", False), ("b", False), ("a", True)], True),  # same tie, "a" first
        ([(None, False), (None, False), (None, False), ("a", True)], True),  # None never votes
        ([(None, False), (None, False)], False),  # no answer at all
        ([], False),
        ([("a", True), ("a", False), ("b", False)], False),  # winner's samples disagree: not counted correct
    ],
)
def test_majority_correct(answers, expected):
    assert majority_correct(answers) is expected


def test_summarize_gives_the_same_bits_in_any_row_order():
    # Figures are float sums: added in arrival order they differ in the last bits between a local and a cluster
    # run. 40 items of 7 samples with varied correctness make pass@k sums that depend on the order of addition.
    rng = random.Random(7)
    items = {f"i{n:02d}": [(s, rng.random() < 0.4, rng.randrange(1, 500), True, str(rng.randrange(3)))
                           for s in range(7)] for n in range(40)}
    expected = summarize(items, 7)
    for seed in range(20):
        order = random.Random(seed)
        keys = list(items)
        order.shuffle(keys)
        shuffled = {k: order.sample(items[k], len(items[k])) for k in keys}
        assert summarize(shuffled, 7) == expected
