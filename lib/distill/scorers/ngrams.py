"""N-gram redundancy: the paper's rule that 20-token n-grams occurring more than 20 times are template-like
redundancy, applied at two levels.

Per response (`repetition`): an n-gram that occurs more than `max_count` times inside one text is a
degenerate loop (the model repeating itself).

Per teacher (`distinct_hashes`, `corpus_flags`): an n-gram that occurs in more than `max_count` different
responses of one teacher is template-like (boilerplate the teacher pastes everywhere). Corpus-level counts
count each response at most once per n-gram, so that a single looping response cannot make its own loop look
like a teacher-wide template; loops are the per-response rule's job. The Spark stage
(distill.stages.score.corpus_max) explodes `distinct_hashes` per response, counts responses per
(teacher, hash), and joins the counts back as each response's `corpus_max`: the most responses that share
one of its n-grams, so that curate can apply any threshold without counting again. `corpus_max` and
`corpus_flags` are the same in plain Python, for tests and benchmarks.

Tokens are a proxy (see `tokens`), not any model's tokenizer, so counts are comparable across teachers.
Hashes are 64-bit blake2b, stable across processes and machines (Python's `hash` is salted per process),
and signed so that they fit a Spark LongType.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

VERSION = "1"
DEFAULT_N = 20
DEFAULT_MAX_COUNT = 20

# Han and kana characters are one token each: those scripts put no spaces between words, so `\w+` would
# make a whole sentence a single token and a 20-gram would span pages. Otherwise: runs of word characters,
# and each other non-space character (punctuation, operators) on its own.
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")


@dataclass(frozen=True)
class RepetitionScore:
    """Flat on purpose (ints, a float, a bool), so that it maps to one Spark struct column."""

    n_tokens: int
    n_ngrams: int  # n-gram positions: max(0, n_tokens - n + 1)
    max_repeat: int  # largest count of a single n-gram within this text (0 when there is none)
    repeated_ngrams: int  # distinct n-grams with count > max_count
    repeated_fraction: float  # fraction of n-gram positions whose n-gram has count > max_count
    degenerate: bool  # repeated_ngrams > 0


def tokens(text: str | None) -> list[str]:
    """Lower-cased word and punctuation tokens: a deterministic proxy for counting n-grams, independent of
    any model tokenizer (teachers use different ones, and the counts must be comparable across them).

    "x^2 = 4, Don't" -> ["x", "^", "2", "=", "4", ",", "don", "'", "t"]
    """
    return _TOKEN.findall((text or "").lower())


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big",
                          signed=True)


def ngram_hashes(toks: list[str], n: int) -> list[int]:
    """64-bit hashes of every n-gram of `toks`, with repetition, in order. Fewer than n tokens: none.

    Tokens never contain whitespace, so joining them with a space is unambiguous.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [_h64(" ".join(toks[i:i + n])) for i in range(len(toks) - n + 1)]


def repetition(text: str | None, n: int = DEFAULT_N, max_count: int = DEFAULT_MAX_COUNT) -> RepetitionScore:
    """The per-response degenerate-loop rule: some n-gram occurs more than `max_count` times in this text."""
    toks = tokens(text)
    hashes = ngram_hashes(toks, n)
    counts = Counter(hashes)
    over = [c for c in counts.values() if c > max_count]
    return RepetitionScore(
        n_tokens=len(toks),
        n_ngrams=len(hashes),
        max_repeat=max(counts.values(), default=0),
        repeated_ngrams=len(over),
        repeated_fraction=sum(over) / len(hashes) if hashes else 0.0,
        degenerate=bool(over),
    )


def distinct_hashes(text: str | None, n: int = DEFAULT_N) -> list[int]:
    """The distinct n-gram hashes of one text, sorted: one row per (response, n-gram) for the corpus count."""
    return sorted(set(ngram_hashes(tokens(text), n)))


def corpus_flags(texts: list[str], n: int = DEFAULT_N, max_count: int = DEFAULT_MAX_COUNT) -> list[int]:
    """For each text, how many of its distinct n-grams occur in more than `max_count` texts of `texts`
    (one teacher's responses). Reference implementation of what the Spark job computes."""
    per_text = [distinct_hashes(t, n) for t in texts]
    doc_freq = Counter(h for hs in per_text for h in hs)
    return [sum(doc_freq[h] > max_count for h in hs) for hs in per_text]


def corpus_max(texts: list[str], n: int = DEFAULT_N) -> list[int]:
    """For each text, the largest number of `texts` that share one of its n-grams (1: none is shared; 0: the
    text has no n-gram). A text fails the corpus rule when this exceeds max_count. Reference implementation
    of distill.stages.score.corpus_max."""
    per_text = [distinct_hashes(t, n) for t in texts]
    doc_freq = Counter(h for hs in per_text for h in hs)
    return [max((doc_freq[h] for h in hs), default=0) for hs in per_text]
