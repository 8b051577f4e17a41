"""Evaluation metrics for the `evaluate` job: plain Python, no Spark, one small function per estimator.

- pass@k: the unbiased estimator of Chen et al. 2021 (Codex), 1 - C(n-c, k) / C(n, k), averaged over items.
- pass@1: the mean correctness over all samples, with a standard error across sample indices.
- maj@k: a vote over the normalized answers of each item's samples.

`summarize` reports one (student, benchmark, difficulty) group. It checks that every item has its
expected samples and says so in `complete`; it never hides an incomplete group, because a reader must see
that a run fell short, but a caller must not present an incomplete group's figures as a finished result:
averaging items with different sample counts is exactly what skews pass@k (lighteval issue #771).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter

# One sample as `summarize` takes it: (sample_index, correct, tokens_out, stopped, normalized_answer).
# `stopped` is False when the sample was cut by the token limit; `normalized_answer` is None when no answer
# could be extracted (and always for tasks without one, such as code).
Sample = tuple[int, bool, int, bool, str | None]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one item with `n` samples of which `c` are correct (Chen et al. 2021).

    1 - C(n-c, k) / C(n, k), computed as the paper's numpy form 1 - prod(1 - k / arange(n-c+1, n+1)):
    the binomials overflow floats for the n of a large sampling run, the product of ratios does not.
    """
    if k < 1 or k > n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        # Every draw of k samples contains a correct one; the product form would also give 1, up to rounding.
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ks_for(n: int) -> list[int]:
    """The k reported for items with `n` samples: powers of two up to n, then n itself; [] when n < 1."""
    ks = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    if n >= 1 and ks[-1] != n:
        ks.append(n)
    return ks


def majority_correct(answers: list[tuple[str | None, bool]]) -> bool:
    """maj@k for one item: whether the most frequent normalized answer among its samples is correct.

    `answers` are (normalized_answer, correct) in sample order; answers are compared as given, so they must
    already be normalized. None (no answer) never takes part in the vote, so an item whose samples mostly
    fail to answer still gets the answer the rest agree on; an item with no answer at all is not correct.
    A tie goes to the tied answer seen first in the given order, so the result does not depend on hash or
    dict order. The winner counts as correct only when all of its samples are correct: they normally agree,
    since correctness follows from the answer, and when a verifier disagrees with itself maj@k must not
    overstate.
    """
    votes = Counter(answer for answer, _ in answers if answer is not None)
    if not votes:
        return False
    top = max(votes.values())
    # Counter keeps first-insertion order, so the first answer with the top count is the first one seen.
    winner = next(answer for answer, count in votes.items() if count == top)
    return all(correct for answer, correct in answers if answer == winner)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _per_index_stderr(samples: list[Sample]) -> float | None:
    """Standard error of pass@1 across sample indices: the spread of the per-index means.

    Each sample index s is one run over the benchmark; its mean is the mean of `correct` over the samples
    with index s (over every item, when the group is complete). The stderr is the sample standard deviation
    (ddof=1) of those means divided by sqrt(number of indices): how much pass@1 moves between runs, which
    is what a reader comparing two students needs. None with fewer than two indices.
    """
    by_index: dict[int, list[bool]] = {}
    for index, correct, *_ in samples:
        by_index.setdefault(index, []).append(correct)
    if len(by_index) < 2:
        return None
    means = [sum(flags) / len(flags) for flags in by_index.values()]
    return statistics.stdev(means) / math.sqrt(len(means))


def summarize(items: dict[str, list[Sample]], expected_samples: int) -> dict:
    """Metrics of one (student, benchmark, difficulty) group: item_id -> its samples (see `Sample`).

    `complete` is True when every item has exactly `expected_samples` samples with indices
    0..expected_samples-1. The figures are computed either way so that a short run is visible, but an
    incomplete group's figures are not the benchmark's result and the caller must not present them as such.

    pass_at_1 is the mean over all samples (the paper's definition); pass_at_k[1] is the mean over items of
    each item's c/n, which is the same number when the group is complete. pass_at_k holds only the k of
    `ks_for(samples_min)`, so no item is ever asked for more samples than it has. maj_at_k votes over all of
    each item's samples and is None when no sample has an answer (code). Token figures are over all
    samples; the correct/wrong means are None when there are no such samples.
    """
    if expected_samples < 1:
        raise ValueError(f"expected_samples must be >= 1, got {expected_samples}")
    if not items:
        raise ValueError("summarize needs at least one item")
    # Items by id and samples by index (stable for duplicates): float sums then add in one order whatever
    # order the rows arrived in, so a local and a cluster run give the very same figures.
    items = {item: sorted(items[item], key=lambda s: s[0]) for item in sorted(items)}
    all_samples = [sample for samples in items.values() for sample in samples]
    if not all_samples:
        raise ValueError("summarize needs at least one sample")

    expected_indices = list(range(expected_samples))
    complete = all(sorted(s[0] for s in samples) == expected_indices for samples in items.values())
    counts = [len(samples) for samples in items.values()]
    samples_min = min(counts)

    pass_k = {}
    for k in ks_for(samples_min):
        per_item = [pass_at_k(len(samples), sum(s[1] for s in samples), k) for samples in items.values()]
        pass_k[k] = sum(per_item) / len(per_item)

    maj_at_k = None
    if any(s[4] is not None for s in all_samples):
        # samples are in index order (above), so ties break the same way whatever order the rows arrived in
        majorities = [majority_correct([(s[4], s[1]) for s in samples]) for samples in items.values()]
        maj_at_k = sum(majorities) / len(majorities)

    tokens = [s[2] for s in all_samples]
    return {
        "items": len(items),
        "samples_min": samples_min,
        "samples_max": max(counts),
        "complete": complete,
        "pass_at_1": sum(s[1] for s in all_samples) / len(all_samples),
        "pass_at_1_stderr": _per_index_stderr(all_samples),
        "pass_at_k": pass_k,
        "maj_at_k": maj_at_k,
        "mean_tokens": sum(tokens) / len(tokens),
        "median_tokens": float(statistics.median(tokens)),
        "mean_tokens_correct": _mean([s[2] for s in all_samples if s[1]]),
        "mean_tokens_wrong": _mean([s[2] for s in all_samples if not s[1]]),
        "stop_ratio": sum(s[3] for s in all_samples) / len(all_samples),
    }
