"""Every category's verifier, chosen from the config, and one call that verifies a mixed batch.

    verifiers = Verifiers(cfg.verify)
    results = verifiers.verify_rows(rows)      # one VerifyResult per row, in order

By default (`verify.verifiers`, see registry): math -> math-verify (+ optional LLM second stage), code ->
sandboxed tests, instruction following -> IFEval rules (+ optional LLM for undecidable ones), science -> LLM
judge against the reference, multi_turn / general -> LLM judge rubric. With no judge configured, science,
multi_turn and general get status `no_verifier` (generate.accept_no_verifier decides what happens to them).
Everything here is plain Python: the pipeline wraps it in a pandas UDF, `distill verify` runs it offline.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Sequence

from distill.config import CATEGORIES, VerifyConfig
from distill.verifiers.base import INFRA_ERROR, NO_VERIFIER, PASS_SCORE, STATUSES, VerifyResult
from distill.verifiers.registry import DEFAULT_VERIFIERS, NONE, NONE_VERSION, REGISTRY, Spec

__all__ = ["PASS_SCORE", "STATUSES", "VerifyResult", "Verifiers"]


class Verifiers:
    """The configured verifier of each category (`verify.verifiers`, see registry), built lazily: a judge loads
    its model only when a judged row shows up, and categories served by one verifier share it."""

    def __init__(self, cfg: VerifyConfig, workers: int | None = None,
                 stamp: dict[str, tuple[str, str]] | None = None):
        self.cfg = cfg
        self.workers = workers or os.cpu_count() or 1
        self._built: dict[str, object] = {}
        self._specs = {c: self._spec(c) for c in CATEGORIES}
        # Versions stamped on results: by default this config's versions() (e.g. math with the judge stage is
        # "1+judge…"); in a task, the driver's, since the driver selects stale attempts and a worker on other
        # code must not cause endless re-verification.
        self.stamp = stamp or self.versions()

    def _spec(self, category: str) -> Spec | None:
        name = self.cfg.verifiers.get(category, DEFAULT_VERIFIERS.get(category, NONE))
        return None if name == NONE else REGISTRY[name].describe(self.cfg)

    # --- what would verify each category, without building anything (the driver uses this) -------------
    def versions(self) -> dict[str, tuple[str, str]]:
        """category -> (verifier, version) currently configured."""
        return {c: (s.name, s.version) if s else (NONE, NONE_VERSION) for c, s in self._specs.items()}

    def loads_model(self, category: str) -> bool:
        """Whether verifying `category` loads a model (so it is verified apart from generation)."""
        spec = self._specs.get(category)
        return spec is not None and spec.loads_model

    # --- building -----------------------------------------------------------------------------------
    def _judge(self):
        if "judge" not in self._built:
            from distill.engines import get_engine
            from distill.verifiers.judge import Judge, judge_identity

            self._built["judge"] = Judge(get_engine(self.cfg.judge), judge_identity(self.cfg.judge),
                                        self.cfg.judge.sampling)
        return self._built["judge"]

    def get(self, category: str):
        spec = self._specs.get(category)
        if spec is None:
            return None
        if spec.name not in self._built:
            self._built[spec.name] = REGISTRY[spec.name].build(self.cfg, self.workers, self._judge)
        return self._built[spec.name]

    def verify_rows(self, rows: Sequence[dict]) -> list[VerifyResult]:
        """Group by category, verify each group with its verifier, return results in input order."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[row.get("category") or ""].append(i)
        results: list[VerifyResult | None] = [None] * len(rows)
        for category, idx in groups.items():
            verifier = self.get(category)
            if verifier is None:
                for i in idx:
                    results[i] = VerifyResult(0.0, NO_VERIFIER, NONE, NONE_VERSION, {"category": category})
                continue
            spec = self._specs[category]
            for i, result in zip(idx, verifier.verify_many([rows[i] for i in idx]), strict=True):
                if category in self.stamp and result.verifier == self.stamp[category][0]:
                    result.verifier_version = self.stamp[category][1]
                results[i] = in_range(result, spec.score_range)
        return results  # type: ignore[return-value]


def in_range(result: VerifyResult, score_range: tuple[float, float]) -> VerifyResult:
    """`result`, or an infra_error saying so when its score is outside the verifier's declared range: a broken
    check is re-verified, never clamped into a plausible score."""
    low, high = score_range
    if low <= result.score <= high:  # NaN fails both comparisons
        return result
    return VerifyResult(0.0, INFRA_ERROR, result.verifier, result.verifier_version,
                        {**result.detail, "reason": f"score {result.score!r} is outside the verifier's range "
                                                    f"[{low:g}, {high:g}]", "score": repr(result.score)})
