"""Evaluation: students answer benchmark items `samples` times; each sample is verified by the pipeline's own
verifiers; the figures per student, benchmark and difficulty go to `eval_results`. The `evaluate` job runs it
for the configured students, `experiment` for its variants' students. Math is checked against the item's
answer, code against all of its tests; the figures are the paper's Table 1 and Table 2.

1. items: each benchmark of `evaluate.benchmarks` is read (plain, HumanEval or LiveCodeBench rows) into
   `eval_items`; an item that cannot be used keeps its reason there and is never asked.
2. students: a student `train` or `experiment` made is found by name in `students` (its model, teachers, sft
   version); any other model is given as a teacher is. Each gets a gen_key (its model, sampling, system prompt): stored
   samples made with another gen_key, or for an item whose text or tests changed, are asked again.
3. samples: distill.generation's ledger loop with the stop rule "a fixed number of samples", into
   `eval_samples` (a stored sample is never generated again; a new verifier version re-verifies it).
4. figures: distill.eval_metrics per group, into `eval_results`.

The students are asked with the pipeline's system prompt (evaluate.system_prompt, default
DEFAULT_SYSTEM_PROMPT): it is the one every training conversation began with, so a student is evaluated
under the instruction it learned to answer, in <think>/<answer> form, as the paper's evaluation did.
"""

from __future__ import annotations

import dataclasses
import sys

from pyspark.sql import functions as F

from distill.config import ConfigError, TeacherConfig
from distill.engines import check_engine
from distill.eval_items import EvalItemsError, read_eval_items
from distill.generation import FixedSamples, run_rounds, verify_spec
from distill.ids import canonical_json, model_identity, stable_id
from distill.settled import Settled
from distill.stages import evaluate as st
from distill.tables import (
    TABLES,
    ensure_table,
    merge_delete,
    merge_replace,
    merge_update,
    merge_upsert,
    read_table,
    rows_by_key,
)

# the tables an evaluation reads and writes
EVALUATION_TABLES = ("students", "eval_items", "eval_samples", "eval_results")


def evaluate(spark, cfg, rec, students: list[dict], state: Settled | None = None) -> None:
    """Every student of `students` (from configured_students or trained_student) on evaluate.benchmarks. With
    `state` (over EVALUATION_TABLES), nothing is done when a run settled on the same items, students and
    verifiers, and a run that leaves nothing to ask settles."""
    e = cfg.evaluate
    with rec.step("items"):
        items = _items(spark, cfg, rec)
        decisive = (stable_id(canonical_json([{k: r[k] for k in st.ITEM_ROW_COLUMNS} for r in items])),
                    [(s["student"], s["gen_key"]) for s in students], verify_spec(spark, _verify(cfg)).versions)
        if state is not None and state.unchanged(decisive):
            return
        item_df = spark.createDataFrame([{k: r[k] for k in st.ITEM_ROW_COLUMNS} for r in items], st.ITEM_ROW)
        _write_items(spark, cfg, rec, item_df)
    ledger = st.ledger(spark.createDataFrame(st.item_keys(items), st.KEYS),
                       spark.createDataFrame([(s["student"], s["gen_key"]) for s in students],
                                             "teacher string, gen_key string"))
    with rec.step("stale"):
        _drop_stale(spark, cfg, rec, items, students)
    models = [s["teacher"] for s in students]
    work = spark.createDataFrame(st.work_rows(items), st.WORK)
    settled = run_rounds(spark, cfg, rec, ledger, models, work, FixedSamples(e.rounds),
                         verify_spec(spark, _verify(cfg)), e.partitions or spark.sparkContext.defaultParallelism,
                         e.batch_size)
    with rec.step("tokens"):
        _count_missing_tokens(spark, cfg, rec)
    with rec.step("results"):
        _results(spark, cfg, rec, item_df, students)
    if state is not None and settled:
        state.settle()


# --- what is evaluated ------------------------------------------------------------------------------------

def configured_students(spark, cfg, only=None) -> list[dict]:
    """Per student of evaluate.students (only those named in `only`, when given): the TeacherConfig the loop
    asks (`teacher`), its gen_key and lineage."""
    e = cfg.evaluate
    unknown = sorted(set(only or ()) - {s.name for s in e.students})
    if unknown:
        raise SystemExit(f"evaluate: unknown student {unknown[0]!r} (configured: "
                         f"{', '.join(s.name for s in e.students)})")
    trained = rows_by_key(spark, cfg, "students")
    out = []
    for i, s in enumerate(e.students):
        if only is not None and s.name not in only:
            continue
        key = f"evaluate.students.{i}"
        sampling = s.sampling or e.sampling
        if s.train is not None:
            row = trained.get(s.train)
            if row is None:
                raise SystemExit(f"config error: {key}.train: no student {s.train!r} in the `students` table "
                                 f"(train it first; trained: {', '.join(sorted(trained)) or 'none'})")
            out.append(trained_student(cfg, s.name, row, sampling, key))
            continue
        engine_args = dict(s.engine_args)
        if s.engine == "replay":  # replay rows are {benchmark, id, sample, response}
            engine_args = {"fields": {"source": "benchmark", "attempt": "sample"}, **engine_args}
        lineage = {"teachers": [s.teacher] if s.teacher else [], "sft_version": None, "train_key": None}
        out.append(_student(cfg, s.name, s.engine, s.model, engine_args, model_identity(s.model), sampling, lineage,
                            key))
    return out


def trained_student(cfg, name: str, row: dict, sampling=None, key: str = "evaluate") -> dict:
    """A student `train` or `experiment` made (its `students` row), asked with evaluate.engine."""
    e = cfg.evaluate
    lineage = {"teachers": list(row["teachers"]), "sft_version": row["sft_version"], "train_key": row["train_key"]}
    return _student(cfg, name, e.engine, row["model_path"], e.engine_args, row["train_key"], sampling or e.sampling,
                    lineage, key)


def _student(cfg, name, engine, model, engine_args, identity, sampling, lineage, key) -> dict:
    e = cfg.evaluate
    teacher = TeacherConfig(name=name, engine=engine, model=model, engine_args=engine_args, sampling=sampling,
                            system_prompt=e.system_prompt)
    try:
        check_engine(teacher, key)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    gen_key = stable_id(engine, identity, canonical_json(engine_args), canonical_json(vars(sampling)),
                        str(e.system_prompt))
    return {"teacher": teacher, "student": name, "gen_key": gen_key, **lineage}


def _items(spark, cfg, rec) -> list[dict]:
    """Every configured benchmark's items (bad ones with their reason), in file order."""
    e = cfg.evaluate
    rows = []
    for i, b in enumerate(e.benchmarks):
        try:
            items = read_eval_items(b.path, b.kind, b.format, b.fields, b.date_from, b.date_to,
                                    key=f"evaluate.benchmarks.{i}")
        except EvalItemsError as err:
            raise SystemExit(f"config error: {err}") from None
        mine = st.item_rows(b.name, items, b.samples, e.math_suffix)
        bad = [r for r in mine if r["bad_reason"]]
        rec.count(f"{b.name}.items", len(mine))
        if bad:
            rec.count(f"{b.name}.bad_items", len(bad))
            print(f"evaluate: {b.name}: {len(bad)} of {len(mine)} items cannot be asked; first: "
                  f"{bad[0]['item_id']}: {bad[0]['bad_reason']}", file=sys.stderr)
        rows += mine
    return rows


def _write_items(spark, cfg, rec, item_df) -> None:
    """The items into `eval_items`, each configured benchmark's rows replaced."""
    names = spark.createDataFrame([(b.name,) for b in cfg.evaluate.benchmarks], "benchmark string")
    df = item_df.drop("position").withColumn("run_id", F.lit(rec.run_id))
    rec.wrote("eval_items", merge_replace(spark, cfg, "eval_items", df, "benchmark", names,
                                                         ignore=("run_id",))["version"])


def _verify(cfg):
    """The pipeline's verifiers with evaluation's code limits: every test (a sample is correct only when all
    pass), each with evaluate.test_timeout_s of CPU."""
    e, code = cfg.evaluate, cfg.verify.code
    code = dataclasses.replace(code, max_tests=e.max_tests or 10**9, cpu_s=e.test_timeout_s,
                               wall_s=max(code.wall_s, e.test_timeout_s * 1.5))
    return dataclasses.replace(cfg.verify, code=code)


# --- keeping eval_samples current --------------------------------------------------------------------

def _drop_stale(spark, cfg, rec, items: list[dict], students: list[dict]) -> None:
    """Delete the configured students' samples that another model or item version made: they are asked again."""
    ensure_table(spark, cfg, "eval_samples")
    current = spark.createDataFrame([(s["student"], s["gen_key"]) for s in students], "student string, g string")
    hashes = spark.createDataFrame([(r["benchmark"], r["item_id"], r["item_hash"]) for r in items],
                                   "benchmark string, item_id string, h string")
    benchmarks = {r["benchmark"] for r in items}
    samples = read_table(spark, cfg, "eval_samples").where(
        F.col("benchmark").isin(sorted(benchmarks)))
    stale = (samples.join(current, "student").join(hashes, ["benchmark", "item_id"], "left")
             .where((F.col("gen_key") != F.col("g")) | F.col("h").isNull() | (F.col("item_hash") != F.col("h")))
             .select(*TABLES["eval_samples"].keys).cache())
    n = stale.count()
    if n:
        print(f"evaluate: {n} stored samples were made by another model version or for a changed item: asked again")
        rec.wrote("eval_samples", merge_delete(spark, cfg, "eval_samples", stale)["version"])
    rec.count("stale_samples", n)
    stale.unpersist()


def _count_missing_tokens(spark, cfg, rec) -> None:
    """tokens_out for samples whose engine reported none (replay), counted with evaluate.tokenizer."""
    from pathlib import Path

    from distill.stages.report import count_tokens

    samples = read_table(spark, cfg, "eval_samples")
    todo = samples.where(F.col("tokens_out").isNull()).select(*TABLES["eval_samples"].keys, "response")
    if todo.isEmpty():
        return
    e, s = cfg.evaluate, cfg.score
    tokenizer = e.tokenizer or s.student_tokenizer or s.perplexity.model
    if tokenizer is None or not Path(tokenizer).exists():
        print("evaluate: no tokenizer (evaluate.tokenizer); replayed samples are counted in whitespace words",
              file=sys.stderr)
        tokenizer = None
    counted = count_tokens(todo, tokenizer).select(*TABLES["eval_samples"].keys,
                                                   F.col("n_tokens").cast("int").alias("tokens_out"))
    rec.wrote("eval_samples", merge_update(spark, cfg, "eval_samples", counted, ["tokens_out"])["version"])


def _results(spark, cfg, rec, item_df, students: list[dict]) -> None:
    who = spark.createDataFrame([(s["student"], s["gen_key"]) for s in students], "student string, gen_key string")
    samples = read_table(spark, cfg, "eval_samples")
    figures = st.results(item_df, who, samples).withColumn("run_id", F.lit(rec.run_id)).withColumn(
        "evaluated_at", F.current_timestamp()).cache()
    # figures that did not change keep their row (and its run_id): the table moves only when a figure does
    rec.wrote("eval_results", merge_upsert(spark, cfg, "eval_results", figures,
                                           ignore=("run_id", "evaluated_at"))["version"])
    rows = figures.where(F.col("difficulty") == "all").orderBy("benchmark", "student").collect()
    figures.unpersist()
    for r in rows:
        state = "" if r["complete"] else " (INCOMPLETE: not every item has its samples)"
        p1 = "n/a" if r["pass_at_1"] is None else f"{100 * r['pass_at_1']:.1f}"
        tokens = "n/a" if r["mean_tokens"] is None else f"{r['mean_tokens']:,.0f}"
        print(f"evaluate: {r['benchmark']}: {r['student']}: pass@1 {p1}, mean tokens {tokens}{state}")
    rec.count("results", len(rows))
    rec.count("incomplete", sum(not r["complete"] for r in rows))
