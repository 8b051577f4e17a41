"""The n-gram redundancy scorer: tokenization, stable 64-bit n-gram hashes (independent of PYTHONHASHSEED),
the per-response degenerate-loop rule and the per-teacher corpus rule, each with planted spans on both sides
of the thresholds (exactly max_count occurrences: kept; max_count + 1: flagged)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distill.scorers.ngrams import (
    DEFAULT_MAX_COUNT,
    DEFAULT_N,
    VERSION,
    RepetitionScore,
    corpus_flags,
    corpus_max,
    distinct_hashes,
    ngram_hashes,
    repetition,
    tokens,
)

LIB = Path(__file__).resolve().parents[1] / "lib"
SPAN = " ".join(f"w{i}" for i in range(20))  # exactly 20 tokens, no repeats inside


def test_defaults_are_the_papers():
    assert (DEFAULT_N, DEFAULT_MAX_COUNT, VERSION) == (20, 20, "1")
    assert len(tokens(SPAN)) == 20


@pytest.mark.parametrize(("text", "expected"), [
    ("The cat sat.", ["the", "cat", "sat", "."]),
    ("x^2 + 1 = 0, so x = ±i", ["x", "^", "2", "+", "1", "=", "0", ",", "so", "x", "=", "±", "i"]),
    ("Don't stop: 3.14!", ["don", "'", "t", "stop", ":", "3", ".", "14", "!"]),
    ("snake_case CamelCase Ünïcode", ["snake_case", "camelcase", "ünïcode"]),
    ("  spaced\n\tout  ", ["spaced", "out"]),
    ("我们再算一次。OK", ["我", "们", "再", "算", "一", "次", "。", "ok"]),  # Han: one token per character
    ("", []),
    (None, []),
])
def test_tokens(text, expected):
    assert tokens(text) == expected


def test_ngram_hashes_every_position_in_order():
    assert ngram_hashes(tokens("The cat sat."), 2) == [-2825131444033275606, 1740398982164584603,
                                                       -9115532420024240953]
    direct = int.from_bytes(hashlib.blake2b(b"the cat", digest_size=8).digest(), "big", signed=True)
    assert ngram_hashes(["the", "cat"], 2) == [direct]
    ab, ba = ngram_hashes(["a", "b", "a"], 2)
    assert ngram_hashes(tokens("A b a B"), 2) == [ab, ba, ab]  # with repetition, case-folded
    assert ab != ba
    assert all(-(2**63) <= h < 2**63 for h in (ab, ba))  # fits a Spark LongType


def test_text_shorter_than_n_has_no_ngrams():
    toks = tokens("only five tokens here ok")
    assert len(ngram_hashes(toks, 5)) == 1
    assert ngram_hashes(toks, 6) == []
    assert distinct_hashes("only five tokens here ok", 20) == []
    assert repetition("only five tokens here ok") == RepetitionScore(5, 0, 0, 0, 0.0, False)
    assert repetition(None) == RepetitionScore(0, 0, 0, 0, 0.0, False)
    with pytest.raises(ValueError):
        ngram_hashes(toks, 0)


_PROBE = ("import json; from distill.scorers.ngrams import distinct_hashes, ngram_hashes, tokens; "
          "t = 'The cat sat on the mat. The cat sat.'; "
          "print(json.dumps([ngram_hashes(tokens(t), 3), distinct_hashes(t, 2), hash('the cat')]))")


def _probe(seed: str) -> list:
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(LIB)}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_hashes_do_not_depend_on_pythonhashseed():
    one, two = _probe("1"), _probe("2")
    # The seeds really differ (Python's own str hash changes), so a hash()-based implementation would fail here.
    assert one[2] != two[2]
    assert one[:2] == two[:2]
    t = "The cat sat on the mat. The cat sat."
    assert one[:2] == [ngram_hashes(tokens(t), 3), distinct_hashes(t, 2)]


def _separated(k: int) -> str:
    """SPAN k times, each followed by a unique token, so only SPAN itself repeats."""
    return " ".join(f"{SPAN} sep{i}" for i in range(k))


def test_repetition_at_the_default_threshold_separated():
    # 21 tokens per copy; the span occurs k times, every other 20-gram once.
    assert repetition(_separated(20)) == RepetitionScore(420, 401, 20, 0, 0.0, False)
    assert repetition(_separated(21)) == RepetitionScore(441, 422, 21, 1, 21 / 422, True)


def test_repetition_at_the_default_threshold_back_to_back():
    # A loop of k copies: the span occurs k times, each of its 19 rotations k - 1 times.
    assert repetition(" ".join([SPAN] * 20)) == RepetitionScore(400, 381, 20, 0, 0.0, False)
    assert repetition(" ".join([SPAN] * 21)) == RepetitionScore(420, 401, 21, 1, 21 / 401, True)
    # 22 copies: the rotations reach 21 too, so all 20 distinct n-grams and every position are over.
    assert repetition(" ".join([SPAN] * 22)) == RepetitionScore(440, 421, 22, 20, 1.0, True)


def test_repetition_small_parameters():
    text = "a b c a b c a b c"  # 'a b c' x3, 'b c a' x2, 'c a b' x2
    assert repetition(text, n=3, max_count=2) == RepetitionScore(9, 7, 3, 1, 3 / 7, True)
    assert repetition(text, n=3, max_count=3) == RepetitionScore(9, 7, 3, 0, 0.0, False)
    # 'a b' x3, 'b c' x3, 'c a' x2
    assert repetition(text, n=2, max_count=2) == RepetitionScore(9, 8, 3, 2, 6 / 8, True)


def test_distinct_hashes_sorted_and_unique():
    hs = distinct_hashes("a b a b a", 2)
    assert hs == sorted(set(ngram_hashes(["a", "b", "a", "b", "a"], 2)))
    assert len(hs) == 2
    assert distinct_hashes(SPAN) == ngram_hashes(tokens(SPAN), 20)  # default n = 20: one n-gram


def test_corpus_flags_small_parameters():
    shared = ["p q r s x1", "p q r s x2", "p q r s x3"]  # 'p q r', 'q r s' in 3 texts each
    other = "a b c d"
    assert corpus_flags(shared[:2] + [other], n=3, max_count=2) == [0, 0, 0]
    assert corpus_flags(shared + [other], n=3, max_count=2) == [2, 2, 2, 0]
    assert corpus_flags(shared + [other], n=3, max_count=3) == [0, 0, 0, 0]
    assert corpus_flags(["p q"] * 5, n=3, max_count=2) == [0] * 5  # shorter than n
    assert corpus_flags([], n=3, max_count=2) == []


def test_corpus_flags_at_the_default_threshold():
    # The span (and no other 20-gram) is shared; intro/outro make every other window unique to its text.
    texts = [f"intro{i} {SPAN} outro{i}" for i in range(21)]
    assert corpus_flags(texts[:20]) == [0] * 20
    assert corpus_flags(texts) == [1] * 21
    assert corpus_flags(texts + ["unrelated text"]) == [1] * 21 + [0]


def test_corpus_counts_each_response_once():
    # 20 responses share the span, one of them loops it 30 times: counted per response that is 20 (kept);
    # counted per occurrence it would be 49.
    texts = [f"intro{i} {SPAN} outro{i}" for i in range(19)] + [" ".join([SPAN] * 30)]
    assert corpus_flags(texts) == [0] * 20
    assert repetition(texts[-1]).degenerate  # the loop is the per-response rule's to catch


def test_flat_for_spark():
    assert {f.type for f in dataclasses.fields(RepetitionScore)} == {"int", "float", "bool"}


def test_corpus_max_agrees_with_the_flags_rule():
    shared = ["p q r s x1", "p q r s x2", "p q r s x3"]
    texts = [*shared, "a b c d", "p q", "a b c e"]  # 'a b c' shared by two; 'p q' has no 3-gram
    assert corpus_max(texts, n=3) == [3, 3, 3, 2, 0, 2]
    for max_count in (1, 2, 3):
        flags = corpus_flags(texts, n=3, max_count=max_count)
        assert [m > max_count for m in corpus_max(texts, n=3)] == [f > 0 for f in flags]
