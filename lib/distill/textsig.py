"""Text signatures for dedup and decontamination, in plain Python: normalized-text hashes, word
n-gram hashes, word shingles. All of them read `normalize_for_dedup` text, so case, width and
spacing differences do not hide a copy."""

from __future__ import annotations

import hashlib
import re

from distill.query_filters import normalize_for_dedup

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(normalize_for_dedup(text or ""))


def text_hash(text: str) -> str:
    """Hash of the normalized text: equal for texts that differ only in case, width or spacing."""
    return hashlib.sha256(normalize_for_dedup(text or "").encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big",
                          signed=True)


def ngram_hashes(text: str, n: int) -> list[int]:
    """Distinct 64-bit hashes of the word n-grams. A text shorter than n words has none: exact match
    covers those."""
    w = words(text)
    return sorted({_h64(" ".join(w[i:i + n])) for i in range(len(w) - n + 1)})


def shingles(text: str, k: int) -> list[str]:
    """Distinct word k-shingles; a text shorter than k words is one shingle (itself), so it can still match."""
    w = words(text)
    if not w:
        return []
    if len(w) < k:
        return [" ".join(w)]
    return sorted({" ".join(w[i:i + k]) for i in range(len(w) - k + 1)})
