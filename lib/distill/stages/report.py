"""Report stages: the paper's teacher comparison as DataFrames, per teacher and category, from `attempts`
and `sft`, and its student figures (pass@1 and mean tokens per benchmark, lengths per difficulty) from
`eval_results` and `eval_samples`. DataFrame -> DataFrame; the report job writes them as `report_*` tables and
draws them.

Lengths are `sft.n_tokens` (the student's tokenizer), falling back to the teacher's own `tokens_out`. The
paper's buckets are under 1,024, 1,024-10,240 and over 10,240 tokens. Diversity of lengths is the normalized
entropy of the log2-length histogram (0: every response in one bin; 1: spread evenly over the bins used by
the whole report), with the coefficient of variation beside it.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

BUCKETS = ("lt_1k", "1k_10k", "gt_10k")  # under 1,024; 1,024-10,240; over 10,240 tokens
ALL = "all"  # the category value of a teacher's all-categories row


def length(df: DataFrame) -> Column:
    return F.coalesce(F.col("n_tokens"), F.col("tokens_out")).cast("long")


def bucket(tokens: Column) -> Column:
    return F.when(tokens < 1024, BUCKETS[0]).when(tokens <= 10240, BUCKETS[1]).otherwise(BUCKETS[2])


def log2_bin(tokens: Column) -> Column:
    """Bin b holds lengths in [2^b, 2^(b+1)); 0 tokens go to bin 0."""
    return F.when(tokens <= 1, 0).otherwise(F.floor(F.log2(tokens))).cast("int")


def _with_all(df: DataFrame) -> DataFrame:
    """Every row twice: under its category and under ALL, so one groupBy gives both levels."""
    return df.withColumn("category", F.explode(F.array(F.col("category"), F.lit(ALL))))


def costs(attempts: DataFrame) -> DataFrame:
    """teacher, category, pairs, attempts, accepted, acceptance_rate, attempts_per_accepted,
    tokens_out_per_accepted, engine_s_per_accepted. A pair's cost is all its attempts, the failed included."""
    pairs = attempts.groupBy("teacher", "category", "query_id").agg(
        F.count("*").alias("n"), F.max(F.coalesce(F.col("accepted"), F.lit(False)).cast("int")).alias("ok"),
        F.sum("tokens_out").alias("tokens"), F.sum("gen_seconds").alias("seconds"))
    g = _with_all(pairs).groupBy("teacher", "category").agg(
        F.count("*").alias("pairs"), F.sum("n").alias("attempts"), F.sum("ok").alias("accepted"),
        F.sum("tokens").alias("tokens_out"), F.sum("seconds").alias("engine_s"))
    per = lambda c: F.when(F.col("accepted") > 0, F.col(c) / F.col("accepted"))  # noqa: E731
    return g.select("teacher", "category", "pairs", "attempts", "accepted",
                    (F.col("accepted") / F.col("pairs")).alias("acceptance_rate"),
                    per("attempts").alias("attempts_per_accepted"),
                    per("tokens_out").alias("tokens_out_per_accepted"),
                    per("engine_s").alias("engine_s_per_accepted"))


def lengths(sft: DataFrame) -> DataFrame:
    """teacher, category, responses, kept, mean/median/p90 tokens, cv, the bucket shares, mean/median ppl."""
    rows = _with_all(sft.withColumn("len", length(sft)).withColumn("bucket", bucket(F.col("len"))))
    share = lambda b: F.avg((F.col("bucket") == b).cast("double")).alias(f"share_{b}")  # noqa: E731
    return rows.groupBy("teacher", "category").agg(
        F.count("*").alias("responses"), F.sum(F.coalesce(F.col("keep"), F.lit(False)).cast("int")).alias("kept"),
        F.avg("len").alias("mean_tokens"), F.percentile("len", 0.5).alias("median_tokens"),
        F.percentile("len", 0.9).alias("p90_tokens"),
        (F.stddev_pop("len") / F.avg("len")).alias("length_cv"),
        *[share(b) for b in BUCKETS],
        F.avg("ppl").alias("mean_ppl"), F.percentile("ppl", 0.5).alias("median_ppl"))


def length_histogram(sft: DataFrame) -> DataFrame:
    """teacher, category, bin (log2 of tokens), lo, hi, count."""
    rows = _with_all(sft.withColumn("bin", log2_bin(length(sft))))
    return rows.groupBy("teacher", "category", "bin").count().select(
        "teacher", "category", "bin", F.pow(2, "bin").cast("long").alias("lo"),
        F.pow(2, F.col("bin") + 1).cast("long").alias("hi"), "count")


def diversity(histogram: DataFrame) -> DataFrame:
    """teacher, category, length_entropy: the histogram's entropy over log(bins used by the whole report)."""
    bins = histogram.select(F.countDistinct("bin").alias("k")).first()["k"] or 1
    totals = histogram.groupBy("teacher", "category").agg(F.sum("count").alias("total"))
    p = histogram.join(totals, ["teacher", "category"]).withColumn("p", F.col("count") / F.col("total"))
    scale = F.lit(1.0) if bins <= 1 else F.lit(1.0 / math.log(bins))
    return p.groupBy("teacher", "category").agg((-F.sum(F.col("p") * F.log(F.col("p"))) * scale)
                                                .alias("length_entropy"))


def verify_histogram(attempts: DataFrame) -> DataFrame:
    """teacher, category, score_bin (0.0, 0.1, ... 1.0: scores in [b, b + 0.1), 1.0 alone; null: no score),
    status, count."""
    # when(): least() skips nulls, so a null score (a timeout) would land in the 1.0 bin without it
    b = F.when(F.col("verify_score").isNotNull(), F.least(F.floor(F.col("verify_score") * 10), F.lit(10)) / 10)
    return _with_all(attempts.where(F.col("verify_status").isNotNull())).groupBy(
        "teacher", "category", b.alias("score_bin"), F.col("verify_status").alias("status")).count()


def rejects(sft: DataFrame) -> DataFrame:
    """teacher, category, reason, count: curate's reject reasons (pending: not decided yet)."""
    reason = F.when(F.col("keep").isNull(), "pending").otherwise(F.col("reject_reason"))
    return _with_all(sft.where(~F.coalesce(F.col("keep"), F.lit(False)))).groupBy(
        "teacher", "category", reason.alias("reason")).count()


# --- a replayed release's own verification beside ours --------------------------------------------------

RELEASE_SCORE = "release_verify_score"  # attempts' column: the release's own score (replay shape am-release)
RELEASE_DISAGREEMENTS_MAX = 100  # rows per teacher and category in report_release_disagreements


def _release_verdicts(attempts: DataFrame, threshold: float) -> DataFrame:
    """The attempts with a release score, with release_passed (release score >= threshold) and passed, our
    verdict: status ok and score >= threshold; a parse_error (no answer found) is a fail; any other status
    (no_verifier, timeout, infra_error, not verified yet) is no verdict (null)."""
    ours = (F.when(F.col("verify_status") == "ok", F.col("verify_score") >= F.lit(threshold))
            .when(F.col("verify_status") == "parse_error", F.lit(False)))
    return (attempts.where(F.col(RELEASE_SCORE).isNotNull())
            .withColumn("release_passed", F.col(RELEASE_SCORE) >= F.lit(threshold)).withColumn("passed", ours))


def release_agreement(attempts: DataFrame, threshold: float) -> DataFrame:
    """attempts -> teacher, category, responses (with a release score), compared (those with a verdict of ours),
    release_passed, passed, agreed, agreement_rate (agreed / compared), release_only (the release passes them, we
    do not), ours_only, mean_release_score and mean_verify_score (over the compared ones)."""
    compared = F.col("passed").isNotNull()

    def n(cond: Column) -> Column:
        return F.sum((compared & cond).cast("long"))

    g = _with_all(_release_verdicts(attempts, threshold)).groupBy("teacher", "category").agg(
        F.count("*").alias("responses"), n(F.lit(True)).alias("compared"),
        n(F.col("release_passed")).alias("release_passed"), n(F.col("passed")).alias("passed"),
        n(F.col("release_passed") == F.col("passed")).alias("agreed"),
        n(F.col("release_passed") & ~F.col("passed")).alias("release_only"),
        n(~F.col("release_passed") & F.col("passed")).alias("ours_only"),
        F.avg(F.when(compared, F.col(RELEASE_SCORE))).alias("mean_release_score"),
        F.avg(F.when(compared, F.col("verify_score"))).alias("mean_verify_score"))
    return g.select("teacher", "category", "responses", "compared", "release_passed", "passed", "agreed",
                    F.when(F.col("compared") > 0, F.col("agreed") / F.col("compared")).alias("agreement_rate"),
                    "release_only", "ours_only", "mean_release_score", "mean_verify_score")


def release_disagreements(attempts: DataFrame, threshold: float,
                          limit: int = RELEASE_DISAGREEMENTS_MAX) -> DataFrame:
    """attempts -> query_id, teacher, attempt, category, release_verify_score, verify_score, verify_status,
    verifier, release_passed, passed: the attempts whose release verdict differs from ours, at most `limit` per
    teacher and category, the widest gap between the two scores first."""
    from pyspark.sql import Window

    rows = _release_verdicts(attempts, threshold).where(
        F.col("passed").isNotNull() & (F.col("release_passed") != F.col("passed")))
    gap = F.abs(F.col(RELEASE_SCORE) - F.coalesce(F.col("verify_score"), F.lit(0.0)))
    rank = F.row_number().over(Window.partitionBy("teacher", "category").orderBy(gap.desc(), "query_id", "attempt"))
    return rows.withColumn("rank", rank).where(F.col("rank") <= limit).select(
        "query_id", "teacher", "attempt", "category", RELEASE_SCORE, "verify_score", "verify_status", "verifier",
        "release_passed", "passed")


def count_tokens(rows: DataFrame, tokenizer: str | None) -> DataFrame:
    """rows with `response` -> the same with `n_tokens` (the student's tokenizer, loaded once per worker; None:
    whitespace words, said so in the report)."""
    import pandas as pd

    from distill.tokenizers import cached_tokenizer

    def run(batches):
        tok = cached_tokenizer(tokenizer) if tokenizer else None
        for pdf in batches:
            texts = [t or "" for t in pdf["response"]]
            counts = ([len(i) for i in tok(texts, add_special_tokens=False)["input_ids"]] if tok is not None
                      else [len(t.split()) for t in texts])
            yield pdf.assign(n_tokens=pd.array(counts, dtype="Int64"))

    from pyspark.sql.types import LongType, StructField, StructType

    return rows.mapInPandas(run, StructType([*rows.schema.fields, StructField("n_tokens", LongType())]))


def output_lengths(outputs: DataFrame) -> DataFrame:
    """model, task, seq, n_tokens rows of report.outputs -> model, task, task_order, n_tokens. task_order ranks
    tasks by their first row (seq) in any model's outputs: easy, medium, hard stay in the order the files give,
    not the alphabet's."""
    # a handful of tasks: ranked on the driver (a window without partitions would pull all rows to one task)
    first = sorted(outputs.groupBy("task").agg(F.min("seq").alias("s")).collect(), key=lambda r: r["s"])
    order = outputs.sparkSession.createDataFrame([(r["task"], i) for i, r in enumerate(first, start=1)],
                                                 "task string, task_order int")
    return outputs.join(F.broadcast(order), "task").select("model", "task", "task_order", "n_tokens")


def eval_task(benchmark: Column, difficulty: Column) -> Column:
    """A sample's task: "<benchmark>:<level>" where the item has a difficulty level, else the benchmark."""
    return F.when(difficulty.isNull() | (difficulty == ALL), benchmark).otherwise(
        F.concat_ws(":", benchmark, difficulty))


def eval_lengths(samples: DataFrame, results: DataFrame) -> DataFrame:
    """eval_samples, eval_results -> model (the student), task, task_order, n_tokens (tokens_out): one row per
    sample with a token count. Tasks are ordered by benchmark name, then by the levels' order in the benchmark's
    file (eval_results.difficulty_order; a benchmark's unlevelled items, its `all` row, come first). A task
    without a results row (evaluate stopped before its figures) comes last."""
    levels = results.groupBy("benchmark", "difficulty").agg(F.min("difficulty_order").alias("o")).collect()
    ranked = sorted(levels, key=lambda r: (r["benchmark"], r["o"] if r["o"] is not None else 1 << 30))
    tasks = [(r["benchmark"] if r["difficulty"] == ALL else f"{r['benchmark']}:{r['difficulty']}", i)
             for i, r in enumerate(ranked, start=1)]
    order = samples.sparkSession.createDataFrame(tasks, "task string, task_order int")
    rows = samples.where(F.col("tokens_out").isNotNull()).select(
        F.col("student").alias("model"), eval_task(F.col("benchmark"), F.col("difficulty")).alias("task"),
        F.col("tokens_out").cast("long").alias("n_tokens"))
    return rows.join(F.broadcast(order), "task", "left").select(
        "model", "task", F.coalesce(F.col("task_order"), F.lit(len(tasks) + 1)).alias("task_order"), "n_tokens")


def adaptive_lengths(*parts: DataFrame) -> DataFrame:
    """model, task, task_order, n_tokens rows (eval_lengths, output_lengths) -> model, task, task_order,
    responses, mean_tokens, median_tokens: lengths per benchmark or difficulty (task), to see whether a model
    writes longer answers to harder tasks. task_order is renumbered 1, 2, ... over all parts: the first part's
    tasks in their order, then the next part's (a task already ranked keeps its first place)."""
    ranks: dict[str, int] = {}
    for part in parts:  # a handful of tasks per part: ranked on the driver
        for r in sorted(part.groupBy("task").agg(F.min("task_order").alias("o")).collect(),
                        key=lambda r: (r["o"], r["task"])):
            ranks.setdefault(r["task"], len(ranks) + 1)
    rows = parts[0].select("model", "task", "n_tokens")
    for part in parts[1:]:
        rows = rows.unionByName(part.select("model", "task", "n_tokens"))
    order = rows.sparkSession.createDataFrame(list(ranks.items()), "task string, task_order int")
    return rows.groupBy("model", "task").agg(
        F.count("*").alias("responses"), F.avg("n_tokens").alias("mean_tokens"),
        F.percentile("n_tokens", 0.5).alias("median_tokens")).join(F.broadcast(order), "task").select(
        "model", "task", "task_order", "responses", "mean_tokens", "median_tokens")


STUDENT_LINEAGE = "student string, teachers array<string>, sft_version long, train_key string"


def student_results(results: DataFrame, trained: DataFrame, configured: DataFrame) -> DataFrame:
    """The paper's Table 1 (pass@1) and Table 2 (mean tokens) in long form, with each student's lineage.

    results: eval_results rows; trained: the `students` table (student, teachers, sft_version, train_key;
    STUDENT_LINEAGE when it does not exist); configured: evaluate.students as student, train, teacher.
    -> student, benchmark, pass_at_1, pass_at_1_stderr, mean_tokens, complete, teachers, sft_version, train_key
    from each benchmark's difficulty-`all` row. A configured student evaluated as `train: <name>` takes that
    trained student's lineage; one configured as a model (replay, external) takes no row of `students` (its
    name may be a trained student's) but the config's `teacher`, if any, as its teachers; a student no longer
    configured is looked up in `students` by its name."""
    figures = results.where(F.col("difficulty") == ALL).select(
        "student", "benchmark", "pass_at_1", "pass_at_1_stderr", "mean_tokens", "complete")
    config = configured.select("student", "train", "teacher", F.lit(True).alias("configured"))
    lineage = trained.select(F.col("student").alias("trained_as"), "teachers", "sft_version", "train_key")
    rows = figures.join(F.broadcast(config), "student", "left").withColumn(
        "trained_as", F.when(F.col("configured").isNull(), F.col("student")).otherwise(F.col("train")))
    rows = rows.join(F.broadcast(lineage), "trained_as", "left")
    teachers = F.coalesce(F.col("teachers"), F.when(F.col("teacher").isNotNull(), F.array(F.col("teacher"))),
                          F.array().cast("array<string>"))
    return rows.select("student", "benchmark", "pass_at_1", "pass_at_1_stderr", "mean_tokens", "complete",
                       teachers.alias("teachers"), "sft_version", "train_key")


AUDIT_STATUSES = ("agrees", "no_majority", "no_answers", "proposed", "disputed", "applied")


def audit_counts(audit: DataFrame) -> DataFrame:
    """reference_audit -> per source: audited, one count per status (`applied` as `revised`)."""
    counts = [F.sum((F.col("status") == s).cast("long")).alias("revised" if s == "applied" else s)
              for s in AUDIT_STATUSES]
    return audit.groupBy("source").agg(F.count("*").alias("audited"), *counts)
