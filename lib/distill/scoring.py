"""Per-response scores, made once per response and score_key whoever needs them: `score` for the `sft` rows,
`experiment` for the attempts its variants choose. Scores live in `attempt_scores`, keyed by attempt; what is
there with the current score_key is read, only the rest is scored (distill.stages.score.score_rows).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pyspark.sql import functions as F

from distill.spark import cores_per_task, remove_path
from distill.stages import score as st
from distill.tables import ensure_table, merge_upsert, read_table, stage

KEYS = ["query_id", "teacher", "attempt"]


def reference_model(spark, cfg) -> str | None:
    """The perplexity model's folder, trained here first when the config asks for a tiny one (the embedded
    default). A missing model is a config error before any task starts."""
    p = cfg.score.perplexity
    if p.model is None:
        return None
    model = str(Path(p.model).resolve())
    if not Path(model).exists():
        if not p.build_tiny_from:
            raise SystemExit(f"config error: score.perplexity.model: no model at {p.model!r} (a local folder; "
                             "nothing is downloaded at run time)")
        print(f"score: training a tiny reference model at {p.model} (embedded default: its perplexities are "
              "illustrative only)")
        train_tiny_in_a_task(spark, model, [str(Path(f).resolve()) for f in p.build_tiny_from])
    return model


def train_tiny_in_a_task(spark, model: str, text_files: list[str]) -> None:
    """distill.tiny_model.train_tiny_model in one Spark task, with the executor's cores, not in the driver: the
    Python workers have loaded torch and transformers already (prepare's embedder), which the driver would
    import for this alone (about 4 s of a first run). The weights are the same whatever the thread count."""
    import pandas as pd

    local = spark.sparkContext.master.startswith("local")
    threads = (os.cpu_count() or 1) if local else cores_per_task(spark)  # the only task running

    def run(frames):
        import torch

        from distill.tiny_model import texts_from_files, train_tiny_model

        for _ in frames:  # the one row only starts the task
            pass
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            train_tiny_model(model, texts_from_files(text_files))
        finally:
            torch.set_num_threads(before)  # the worker's later tasks share the cores again
        yield pd.DataFrame({"model": [model]})

    spark.range(0, 1, 1, 1).mapInPandas(run, "model string").collect()  # one partition: one task


def score_spec(spark, cfg) -> st.ScoreSpec:
    model = reference_model(spark, cfg)
    s = cfg.score
    if model is not None and s.perplexity.engine == "vllm":
        from distill.config import ConfigError, TeacherConfig
        from distill.engines import check_engine

        try:  # an unknown vLLM argument fails here, naming the key, before any task starts
            check_engine(TeacherConfig("reference", "vllm", model, s.perplexity.engine_args), "score.perplexity")
        except ConfigError as err:
            raise SystemExit(f"config error: {err}") from None
    ppl = None if model is None else {**dataclasses.asdict(s.perplexity), "model": model, "build_tiny_from": []}
    tokenizer = s.student_tokenizer or model
    if s.student_tokenizer and not Path(s.student_tokenizer).exists():
        raise SystemExit(f"config error: score.student_tokenizer: no tokenizer at {s.student_tokenizer!r}")
    return st.ScoreSpec(ppl, str(Path(tokenizer).resolve()) if tokenizer else None, s.ngram_n,
                        cores_per_task(spark))


def scores_of(spark, cfg, rec, rows, spec: st.ScoreSpec):
    """The scores of `rows` (query_id, teacher, attempt, messages, response, finish_reason): query_id, teacher,
    attempt, SCORE_COLUMNS, score_key, scored_at per row. Rows already in `attempt_scores` with this score_key
    are not scored again; the others are scored now and added there first (a crash after that loses nothing).
    Returns (scores, stats, total): stats per teacher of the rows scored now (rows, tokens, errors,
    first_error), and how many rows were asked for."""
    key = spec.key()
    ensure_table(spark, cfg, "attempt_scores")
    have = read_table(spark, cfg, "attempt_scores").where(F.col("score_key") == key).select(*KEYS)
    todo = rows.join(have, KEYS, "left_anti")
    n = todo.count()
    stats = []
    if not n:
        rec.progress("responses scored", 0, 0)  # the line a re-run shows: nothing to score
    else:
        with rec.watch("responses scored", n) as counter:
            staged, scratch = stage(spark, cfg, st.score_rows(todo, spec, cfg.score.partitions, counter), "score")
        stats = staged.groupBy("teacher").agg(F.count("*").alias("rows"), F.sum("ppl_tokens").alias("tokens"),
                                              F.count("ppl_error").alias("errors"),
                                              F.first("ppl_error", ignorenulls=True).alias("first_error")).collect()
        scored = (staged.withColumn("score_key", F.lit(key)).withColumn("run_id", F.lit(rec.run_id))
                  .withColumn("scored_at", F.current_timestamp()))
        rec.wrote("attempt_scores", merge_upsert(spark, cfg, "attempt_scores", scored)["version"])
        remove_path(spark, scratch)
    total = rows.count()
    rec.count("scores_reused", total - n)
    stored = read_table(spark, cfg, "attempt_scores").where(F.col("score_key") == key)
    scores = rows.select(*KEYS).join(stored, KEYS).select(*KEYS, *st.SCORE_COLUMNS, "score_key", "scored_at")
    return scores, stats, total
