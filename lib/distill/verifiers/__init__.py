"""Every category's verifier, chosen from the config, and one call that verifies a mixed batch.

    verifiers = Verifiers(cfg.verify)
    results = verifiers.verify_rows(rows)      # one VerifyResult per row, in order

Categories: math -> math-verify (+ optional LLM second stage), code -> sandboxed tests, instruction
following -> IFEval rules (+ optional LLM for undecidable ones), science -> LLM judge against the
reference, multi_turn / general -> LLM judge rubric. With no judge configured, science, multi_turn and
general get status `no_verifier` (generate.accept_no_verifier decides what happens to them).
Everything here is plain Python: the pipeline wraps it in a pandas UDF, `distill verify` runs it offline.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Sequence

from distill.config import CATEGORIES, TeacherConfig, VerifyConfig
from distill.verifiers.base import NO_VERIFIER, PASS_SCORE, STATUSES, VerifyResult

__all__ = ["PASS_SCORE", "STATUSES", "VerifyResult", "Verifiers"]

JUDGED = ("science", "multi_turn", "general")
NONE, NONE_VERSION = "none", "0"


def judge_identity(judge: TeacherConfig) -> dict:
    return {"engine": judge.engine, "model": judge.model, "sampling": vars(judge.sampling),
            "system_prompt": judge.system_prompt}


class Verifiers:
    """Builds each verifier lazily (a judge loads its model only when a judged row shows up)."""

    def __init__(self, cfg: VerifyConfig, workers: int | None = None,
                 stamp: dict[str, tuple[str, str]] | None = None):
        self.cfg = cfg
        self.workers = workers or os.cpu_count() or 1
        self._built: dict[str, object] = {}
        # Versions stamped on results: by default this config's versions() (e.g. math with the judge stage is
        # "1+judge…"); in a task, the driver's, since the driver selects stale attempts and a worker on other
        # code must not cause endless re-verification.
        self.stamp = stamp or self.versions()

    # --- what would verify each category, without building anything (the driver uses this) -------------
    def versions(self) -> dict[str, tuple[str, str]]:
        """category -> (verifier, version) currently configured."""
        from distill.verifiers import code, ifeval, judge, math

        loose = self.cfg.ifeval_score == "loose"
        out = {"math": ("math", math.VERSION), "code": ("code", code.VERSION),
               "instruction_following": ("ifeval", ifeval.VERSION + (ifeval.LOOSE_VERSION if loose else ""))}
        j = self.cfg.judge
        if j is not None:
            version = judge.judge_version(judge_identity(j))
            if self.cfg.math.llm_judge:
                out["math"] = ("math", f"{math.VERSION}+judge{version}")
            if self.cfg.ifeval_llm:
                out["instruction_following"] = ("ifeval", f"{out['instruction_following'][1]}+judge{version}")
            out["science"] = ("judge-reference", version)
            out["multi_turn"] = out["general"] = ("judge-quality", version)
        return {c: out.get(c, (NONE, NONE_VERSION)) for c in CATEGORIES}

    def needs_judge(self, category: str) -> bool:
        """Whether verifying `category` may ask the LLM judge (so it is verified apart from generation)."""
        verifier, version = self.versions()[category]
        return verifier.startswith("judge-") or "+judge" in version

    # --- building -----------------------------------------------------------------------------------
    def _judge(self):
        if "judge" not in self._built:
            from distill.engines import get_engine
            from distill.verifiers.judge import Judge

            self._built["judge"] = Judge(get_engine(self.cfg.judge), judge_identity(self.cfg.judge),
                                        self.cfg.judge.sampling)
        return self._built["judge"]

    def _make(self, category: str):
        c = self.cfg
        if category == "math":
            from distill.verifiers.math import MathVerifier

            hook = self._judge().math_hook() if c.judge is not None and c.math.llm_judge else None
            return MathVerifier(workers=c.math.workers or self.workers, timeout_s=c.math.timeout_s, judge=hook)
        if category == "code":
            from distill.verifiers.code import CodeVerifier
            from distill.verifiers.sandbox import SandboxLimits

            limits = SandboxLimits(cpu_s=c.code.cpu_s, wall_s=c.code.wall_s, memory_bytes=c.code.memory_mb * 2**20,
                                   max_procs=c.code.max_procs, max_output_bytes=c.code.max_output_kb * 2**10)
            return CodeVerifier(max_tests=c.code.max_tests, limits=limits, workers=c.code.workers or self.workers)
        if category == "instruction_following":
            from distill.verifiers.ifeval import IfEvalVerifier

            hook = self._judge().instruction_hook() if c.judge is not None and c.ifeval_llm else None
            return IfEvalVerifier(judge=hook, loose=c.ifeval_score == "loose")
        if category in JUDGED and c.judge is not None:
            from distill.verifiers.judge import JudgeVerifier

            return JudgeVerifier(self._judge(), "reference" if category == "science" else "quality")
        return None

    def get(self, category: str):
        if category not in self._built:
            self._built[category] = self._make(category)
        return self._built[category]

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
            for i, result in zip(idx, verifier.verify_many([rows[i] for i in idx]), strict=True):
                if category in self.stamp and result.verifier == self.stamp[category][0]:
                    result.verifier_version = self.stamp[category][1]
                results[i] = result
        return results  # type: ignore[return-value]
