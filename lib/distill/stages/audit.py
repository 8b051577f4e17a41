"""Reference audit stages (distill.reference_audit in Spark tasks). DataFrame -> DataFrame; no table is read or
written here.

`audit_queries` groups each math query's attempts in one task and audits them; `ask_judge` asks the configured
judge for its own answer to the queries whose clear majority disagrees with the reference, in batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame

from distill.config import ReferenceAuditConfig

AUDITED = ("query_id string, attempts int, answers int, majority_answer string, votes int, share double, "
           "teachers int, status string")


def audit_queries(attempts: DataFrame, cfg: ReferenceAuditConfig, workers: int, timeout_s: float) -> DataFrame:
    """attempts: query_id, reference_answer, teacher, response (every attempt of the queries to audit) ->
    AUDITED, one row per query. math-verify runs in the verifier's killable process pool (`workers` per task)."""
    rules = json.dumps(vars(cfg))

    def run(pdf: pd.DataFrame) -> pd.DataFrame:
        from functools import partial

        from distill.config import ReferenceAuditConfig, build_section
        from distill.reference_audit import audit
        from distill.verifiers.math import equivalent

        c = build_section(ReferenceAuditConfig, json.loads(rules), "prepare.reference_audit")
        row = audit(str(pdf["reference_answer"].iloc[0]), list(zip(pdf["teacher"], pdf["response"], strict=True)),
                    c, partial(equivalent, workers=workers, timeout_s=timeout_s))
        return pd.DataFrame([{"query_id": pdf["query_id"].iloc[0], **row}])

    return attempts.select("query_id", "reference_answer", "teacher", "response").groupBy("query_id").applyInPandas(
        run, AUDITED)


def ask_judge(disagreeing: DataFrame, judge_json: str, workers: int, timeout_s: float,
              batch_size: int = 64) -> DataFrame:
    """disagreeing: query_id, messages, majority_answer -> query_id, judge_answer, status (proposed when the
    judge's own answer equals the majority's, else disputed). judge_json: the judge's TeacherConfig as JSON, with
    the model path the tasks open."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from functools import partial

        from distill.config import TeacherConfig, build_section
        from distill.engines import get_engine
        from distill.reference_audit import decide
        from distill.verifiers.judge import Judge, judge_identity, question_text
        from distill.verifiers.math import equivalent

        judge_cfg = build_section(TeacherConfig, json.loads(judge_json), "verify.judge")
        judge = None
        for pdf in batches:
            for start in range(0, len(pdf), batch_size):
                chunk = pdf.iloc[start:start + batch_size]
                judge = judge or Judge(get_engine(judge_cfg), judge_identity(judge_cfg), judge_cfg.sampling)
                questions = [question_text({"messages": [dict(m) for m in msgs]}) for msgs in chunk["messages"]]
                answers = judge.solve(questions)
                statuses = decide(list(chunk["majority_answer"]), answers,
                                  partial(equivalent, workers=workers, timeout_s=timeout_s))
                yield pd.DataFrame({"query_id": chunk["query_id"].values, "judge_answer": answers,
                                    "status": statuses})

    return disagreeing.select("query_id", "messages", "majority_answer").mapInPandas(
        run, "query_id string, judge_answer string, status string")
