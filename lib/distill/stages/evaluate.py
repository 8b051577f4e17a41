"""Evaluate stages: benchmark items -> the ledger loop's work rows, and eval_samples -> the figures of
eval_results. DataFrame -> DataFrame (the items are built on the driver: a benchmark is hundreds of items);
the job reads and writes the tables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distill.eval_items import EvalItem
from distill.ids import canonical_json, query_id, stable_id
from distill.tables import CONSTRAINTS, MESSAGES

# The loop's work rows (distill.generation speaks of query_id; source_id is the item's own id, which the
# replay engine matches), with what eval_samples and eval_results keep of the item.
WORK = (f"query_id string, source_id string, benchmark string, item_id string, category string, "
        f"messages {MESSAGES}, reference_answer string, test_cases string, constraints {CONSTRAINTS}, "
        "samples int, difficulty string, position int, item_hash string")
ITEM_ROW = ("benchmark string, item_id string, kind string, difficulty string, item_date string, prompt string, "
            "answer string, tests int, item_hash string, bad_reason string, samples int, position int")
ITEM_ROW_COLUMNS = tuple(c.split()[0] for c in ITEM_ROW.split(", "))


def user_prompt(item: EvalItem, math_suffix: str) -> str:
    """What the student is asked: math items end with the paper's instruction to box the final answer."""
    if item.kind == "math" and math_suffix:
        return f"{item.prompt.rstrip()}\n\n{math_suffix}"
    return item.prompt


def item_rows(benchmark: str, items: Sequence[EvalItem], samples: int, math_suffix: str) -> list[dict]:
    """One eval_items row per item (bad ones included: they keep their reason), in file order.
    item_hash covers what decides a sample and its verdict: the prompt as sent, the answer, the tests."""
    rows = []
    for position, it in enumerate(items):
        prompt = user_prompt(it, math_suffix)
        rows.append({"benchmark": benchmark, "item_id": it.item_id, "kind": it.kind, "difficulty": it.difficulty,
                     "item_date": it.date, "prompt": prompt, "answer": it.answer,
                     "tests": len(it.test_cases["tests"]) if it.test_cases else None,
                     "item_hash": stable_id(it.kind, prompt, it.answer or "", canonical_json(it.test_cases)),
                     "bad_reason": it.bad_reason, "samples": samples, "position": position,
                     "test_cases": json.dumps(it.test_cases) if it.test_cases else None})
    return rows


def work_rows(rows: Sequence[dict]) -> list[tuple]:
    """The usable items as the loop's work rows (WORK). query_id is the id the replay engine gives an item of
    source `benchmark` with id `item_id`, so a replay student's rows {benchmark, id, sample} match."""
    return [(query_id(r["benchmark"], r["item_id"], {}), r["item_id"], r["benchmark"], r["item_id"], r["kind"],
             [{"role": "user", "content": r["prompt"]}], r["answer"], r["test_cases"], None, r["samples"],
             r["difficulty"], r["position"], r["item_hash"]) for r in rows if r["bad_reason"] is None]


def item_keys(rows: Sequence[dict]) -> list[tuple]:
    """(query_id, benchmark, item_id, difficulty, item_hash) of the usable items: how the loop's query_id maps
    back to an item."""
    return [(query_id(r["benchmark"], r["item_id"], {}), r["benchmark"], r["item_id"], r["difficulty"],
             r["item_hash"]) for r in rows if r["bad_reason"] is None]


def ledger(keys: DataFrame, gen_keys: DataFrame):
    """eval_samples as distill.generation's ledger: the loop's (query_id, teacher, attempt, category, accepted,
    verify_*) are the table's (benchmark + item_id, student, sample, kind, correct, score, status, ...).
    keys: item_keys rows; gen_keys: teacher (the student's name), gen_key."""
    from distill.generation import Ledger
    from distill.tables import TABLES

    columns = [c.split()[0] for c in TABLES["eval_samples"].ddl.split(", ")]
    keys, gen_keys = F.broadcast(keys), F.broadcast(gen_keys)

    def to_table(df: DataFrame) -> DataFrame:
        df = (df.join(keys, "query_id").join(gen_keys, "teacher")
              .withColumnRenamed("teacher", "student").withColumnRenamed("attempt", "sample")
              .withColumnRenamed("category", "kind").withColumnRenamed("verify_score", "score")
              .withColumnRenamed("verify_status", "status").withColumnRenamed("accepted", "correct"))
        return df.select(*[c for c in columns if c in df.columns])

    def from_table(df: DataFrame) -> DataFrame:
        return df.join(keys.drop("difficulty"), ["benchmark", "item_id", "item_hash"]).select(
            "query_id", F.col("student").alias("teacher"), F.col("sample").alias("attempt"),
            F.col("kind").alias("category"), "response", F.col("score").alias("verify_score"),
            F.col("status").alias("verify_status"), "verifier", "verifier_version",
            F.col("correct").alias("accepted"))

    return Ledger("eval_samples", correct, to_table=to_table, from_table=from_table, role="student")


KEYS = "query_id string, benchmark string, item_id string, difficulty string, item_hash string"


def correct(df: DataFrame) -> DataFrame:
    """`accepted` for an evaluation: verified ok with score 1. A math verdict is 0 or 1; a code sample scores
    the share of its tests passed, so only one that passes all of them counts (LiveCodeBench's rule)."""
    return df.withColumn("accepted", (F.col("verify_status") == "ok") & (F.col("verify_score") >= 1.0))


# --- figures ----------------------------------------------------------------------------------------------

RESULT = ("student string, benchmark string, difficulty string, difficulty_order int, items long, bad_items long, "
          "samples_expected int, samples_min int, samples_max int, complete boolean, pass_at_1 double, "
          "pass_at_1_stderr double, pass_at_k map<int,double>, maj_at_k double, mean_tokens double, "
          "median_tokens double, mean_tokens_correct double, mean_tokens_wrong double, stop_ratio double, "
          "gen_key string")
FIGURES = ("samples_min", "samples_max", "pass_at_1", "pass_at_1_stderr", "pass_at_k", "maj_at_k", "mean_tokens",
           "median_tokens", "mean_tokens_correct", "mean_tokens_wrong", "stop_ratio")


def majority_answer(kind: str, response: str | None) -> str | None:
    """The answer maj@k votes on: a math sample's final answer with spaces removed (None for code)."""
    if kind != "math" or response is None:
        return None
    from distill.response import answer_part
    from distill.verifiers.math import extract_final_answer

    answer = extract_final_answer(answer_part(response))
    return "".join(answer.split()) if answer else None


def results(items: DataFrame, students: DataFrame, samples: DataFrame) -> DataFrame:
    """Figures per (student, benchmark, difficulty): difficulty `all` and each level the benchmark has.

    items: eval_items rows; students: student, gen_key; samples: eval_samples rows. Every item of a benchmark
    counts for every student, asked or not: an item without its samples (or whose verification is still
    pending) makes the group incomplete, and so does an item that could not be asked (bad_items). Figures of
    an incomplete group are kept, with complete = false, never presented as the benchmark's result."""
    verified = samples.where(F.col("correct").isNotNull()).select(
        "student", "benchmark", "item_id", "sample", "correct", "tokens_out", "finish_reason", "response")
    grid = items.crossJoin(students.select("student", "gen_key"))
    rows = grid.join(verified, ["student", "benchmark", "item_id"], "left").select(
        "student", "benchmark", "item_id", "kind", "difficulty", "position", "bad_reason", "samples", "gen_key",
        "sample", "correct", "tokens_out", "finish_reason", "response")
    return rows.groupBy("student", "benchmark").applyInPandas(_group_figures, RESULT)


def _group_figures(pdf: pd.DataFrame) -> pd.DataFrame:
    from distill.eval_metrics import summarize

    first = pdf.iloc[0]
    levels = (pdf.dropna(subset=["difficulty"]).groupby("difficulty")["position"].min().sort_values().index)
    out = []
    for order, difficulty in enumerate(["all", *levels]):
        part = pdf if difficulty == "all" else pdf[pdf["difficulty"] == difficulty]
        bad = part.loc[part["bad_reason"].notna(), "item_id"].nunique()
        good = part[part["bad_reason"].isna()]
        expected = int(part["samples"].max())
        items: dict[str, list] = {}
        for r in good.itertuples(index=False):
            got = items.setdefault(r.item_id, [])
            if pd.notna(r.sample):
                got.append((int(r.sample) - 1, bool(r.correct), int(r.tokens_out) if pd.notna(r.tokens_out) else 0,
                            r.finish_reason != "length", majority_answer(r.kind, r.response)))
        figures = dict.fromkeys(FIGURES)
        complete = False
        if any(items.values()):
            summary = summarize(items, expected)
            figures = {k: summary[k] for k in FIGURES}
            complete = summary["complete"] and bad == 0
        out.append({"student": first["student"], "benchmark": first["benchmark"], "difficulty": difficulty,
                    "difficulty_order": order, "items": len(items), "bad_items": bad, "samples_expected": expected,
                    "complete": complete, "gen_key": first["gen_key"], **figures})
    frame = pd.DataFrame(out)
    for column in ("samples_min", "samples_max"):
        frame[column] = frame[column].astype("Int32")
    return frame

