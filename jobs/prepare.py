"""prepare: judge queries: heuristic filters, benchmark decontamination (exact, n-gram, semantic),
exact and near-duplicate dedup. Sets `status` (kept | dropped) and `drop_reason` in `queries`, writes
`decontam_matches`, caches embeddings in `embeddings`.

Incremental: it judges only queries that are `new` or were judged under another prepare config
(`prepare_key`). New queries are still deduplicated against the ones kept before, and those keep
their status. Embeddings are cached by text and model, so a changed threshold re-decides without
re-embedding.
"""

from __future__ import annotations

import dataclasses
import json

from distill.benchmarks import BenchmarkError, read_benchmark
from distill.engines import for_tasks
from distill.faults import crash_point
from distill.ids import canonical_json, stable_id
from distill.reference_audit import APPLIED, DISAGREES, PROPOSED, audit_key
from distill.settled import Settled
from distill.spark import cores_per_task, remove_path
from distill.stages import audit as audit_st
from distill.stages import prepare as st
from distill.tables import (
    TABLES,
    ensure_table,
    merge_new,
    merge_replace,
    merge_update,
    merge_upsert,
    read_table,
    stage,
    table_path,
)
from distill.textsig import text_hash
from distill.verifiers.judge import judge_identity, judge_version
from pyspark.sql import functions as F

HELP = "filter, decontaminate and deduplicate new queries (status/drop_reason in `queries`)"


def add_arguments(parser) -> None:
    pass


def prepare_key(cfg, bench_rows) -> str:
    """Everything that decides a query's fate: thresholds, methods, the embedder, the benchmark items."""
    p = cfg.prepare
    decisive = {
        "filters": vars(p.filters), "dedup": vars(p.dedup),
        "decontam": {k: v for k, v in vars(p.decontam).items() if k not in ("benchmarks", "block_rows")},
        "embedder": [p.embedder.path, p.embedder.pooling, p.embedder.max_length],
        "benchmarks": sorted((b, i, h) for b, i, _, h in bench_rows),
    }
    return stable_id("prepare", canonical_json(decisive))[:16]


def read_benchmarks(cfg) -> list[tuple[str, str, str, str]]:
    rows = []
    for i, src in enumerate(cfg.prepare.decontam.benchmarks):
        for item_id, text in read_benchmark(src, f"prepare.decontam.benchmarks.{i}"):
            rows.append((src.name, item_id, text, text_hash(text)))
    return rows


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    p = cfg.prepare
    with rec.step("benchmarks"):  # a config error first, before any table is looked at
        try:
            bench_rows = read_benchmarks(cfg)
        except BenchmarkError as err:
            raise SystemExit(f"config error: {err}") from None
    if not DeltaTable.isDeltaTable(spark, table_path(cfg, "queries")):
        raise SystemExit("prepare: no `queries` table yet; run ingest first")
    if bench_rows and p.decontam.semantic:
        _check_embedder(p.embedder)
    rec.count("benchmark_items", len(bench_rows))
    state = Settled(spark, cfg, rec, ("queries", "attempts", "embeddings", "decontam_matches", "reference_audit"))
    audit = _audit_key(cfg) if p.reference_audit.enabled else None
    if state.unchanged((prepare_key(cfg, bench_rows), audit)):
        return
    judge_queries(spark, cfg, rec, bench_rows)
    if p.reference_audit.enabled:
        audit_references(spark, cfg, rec)
    state.settle()  # every query judged under this config, every math reference audited on its attempts


def judge_queries(spark, cfg, rec, bench_rows) -> None:
    """Filters, decontamination and dedup for the queries not yet judged under this config."""
    p = cfg.prepare
    key = prepare_key(cfg, bench_rows)
    bench = spark.createDataFrame(bench_rows, "benchmark string, item_id string, text string, norm_hash string")

    queries = read_table(spark, cfg, "queries")
    judged_now = F.col("prepare_key") == F.lit(key)
    todo = queries.filter(~F.coalesce(judged_now, F.lit(False)) | (F.col("status") == "new"))
    settled = queries.filter(judged_now & (F.col("status") == "kept"))

    if todo.isEmpty():  # a re-run: no Python worker is started to score nothing
        rec.count("todo", 0)
        print("prepare: nothing to judge (every query was judged under this config)")
        return
    with rec.step("signals"):
        todo = st.filter_reasons(st.with_signals(todo), p.filters).persist()
        n_todo = todo.count()
    rec.count("todo", n_todo)
    passing = todo.filter(F.col("filter_reason").isNull())

    # --- decontamination -------------------------------------------------------------------------
    d = p.decontam
    matches = spark.createDataFrame([], st.MATCH_SCHEMA)
    if bench_rows:
        if d.exact:
            matches = matches.unionByName(st.exact_matches(passing, bench))
        if d.ngram:
            matches = matches.unionByName(st.ngram_matches(passing, bench, d.ngram_n))
        if d.semantic:
            with rec.step("embed"):
                vectors = _vectors(spark, cfg, rec, passing.select("query_id", "text"),
                                   bench.select("benchmark", "item_id", "text"))
            q_vecs, b_vecs = vectors
            crash_point("prepare.embedded")  # the embeddings cache is written, nothing else yet
            bench_path = table_path(cfg, f"_prepare/bench_vectors/{key}")
            b_vecs.coalesce(1).write.mode("overwrite").parquet(bench_path)
            matches = matches.unionByName(st.semantic_matches(q_vecs, bench_path, d.similarity_threshold,
                                                              d.block_rows))
    with rec.step("decontam"):
        # staged, not persisted: see the write step
        matches, matches_path = stage(spark, cfg, matches.withColumn("prepare_key", F.lit(key)), "prepare-matches")
        for row in matches.groupBy("method").count().collect():
            rec.count(f"matches.{row['method']}", row["count"])

    # --- dedup among what survives, old kept queries first ----------------------------------------
    with rec.step("dedup"):
        fresh = passing.join(matches.select("query_id").distinct(), "query_id", "left_anti")
        cols = ["query_id", "norm_hash", "text", "ingested_at", "source_file", "source_line"]
        settled_c = st.with_text(settled).select(*cols, F.lit(True).alias("settled"))
        fresh_c = fresh.select(*cols, F.lit(False).alias("settled"))
        candidates = st.survivor_order(settled_c.unionByName(fresh_c))
        dups = st.exact_duplicates(candidates) if p.dedup.exact else spark.createDataFrame(
            [], "query_id string, duplicate_of string")
        if p.dedup.near:
            remaining = candidates.join(dups, "query_id", "left_anti")
            near = st.near_duplicates(remaining.filter("NOT settled"), remaining, p.dedup)
        else:
            near = spark.createDataFrame([], "query_id string, near_duplicate_of string")

    with rec.step("write"):
        # Staged (written once to scratch Parquet), not persisted: a MERGE plans and runs a persisted source's
        # whole query again, and each commit to `queries` re-plans every cached DataFrame that reads it. So the
        # decisions are computed once, and nothing cached reads `queries` when it is written.
        decided, decided_path = stage(spark, cfg, st.decide(todo, matches, dups, near).withColumn(
            "prepare_key", F.lit(key)).withColumn("prepared_at", F.current_timestamp()), "prepare-decided")
        todo.unpersist()
        for row in decided.groupBy("status", F.split("drop_reason", ":")[0].alias("why")).count().collect():
            rec.count(row["status"] if row["status"] == "kept" else f"dropped.{row['why']}", row["count"])
        metrics = merge_replace(spark, cfg, "decontam_matches", matches, "query_id", decided.select("query_id"))
        rec.wrote("decontam_matches", metrics["version"])
        crash_point("prepare.matched")  # decontam_matches is replaced, `queries` not decided yet
        metrics = merge_update(spark, cfg, "queries", decided, ["status", "drop_reason", "norm_hash", "signals",
                                                                "prepare_key", "prepared_at"])
        rec.wrote("queries", metrics["version"])
    for path in (matches_path, decided_path):
        remove_path(spark, path)
    c = rec.counts
    dropped = {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("dropped.")}
    print(f"prepare: judged {n_todo} queries: {c.get('kept', 0)} kept, dropped {dropped or 'none'}; "
          f"embedded {c.get('embedded', 0)} new texts")


def audit_references(spark, cfg, rec) -> None:
    """The math reference audit (distill.reference_audit) of kept math queries whose attempts, reference or
    audit rules changed since their last audit; then, with prepare.reference_audit.apply, the revisions."""
    from delta.tables import DeltaTable

    a = cfg.prepare.reference_audit
    if not DeltaTable.isDeltaTable(spark, table_path(cfg, "attempts")):
        return  # nothing generated yet: the first run of a new warehouse
    judge = cfg.verify.judge if a.ask_judge else None
    key = _audit_key(cfg)
    math = read_table(spark, cfg, "queries").where(
        (F.col("status") == "kept") & (F.col("category") == "math") & F.col("reference_answer").isNotNull())
    attempts = read_table(spark, cfg, "attempts").join(math.select("query_id"), "query_id", "left_semi")
    seen = attempts.groupBy("query_id").agg(F.count("*").cast("int").alias("n"))
    todo = math.join(seen, "query_id")
    ensure_table(spark, cfg, "reference_audit")
    stored = read_table(spark, cfg, "reference_audit")
    todo = todo.join(stored.select("query_id", F.col("reference").alias("audited_reference"), "audit_key",
                                   F.col("attempts").alias("audited_attempts"), F.col("status").alias("old")),
                     "query_id", "left").where(
        F.col("old").isNull() | ((F.col("old") != "applied") & (
            (F.col("audit_key") != key) | (F.col("audited_attempts") != F.col("n"))
            | (F.col("audited_reference") != F.col("reference_answer")))))
    # staged (written once, read back): the math checks and the judge run exactly once, and nothing read here
    # is re-planned when reference_audit is written
    with rec.step("audit.select"):
        todo, todo_path = stage(spark, cfg, todo.select("query_id", "source", "reference_answer", "messages"),
                                "audit-todo")
        scratch = [todo_path]
        n_todo = todo.count()
    rec.count("audit.todo", n_todo)
    try:
        if n_todo:
            workers, timeout = cores_per_task(spark), cfg.verify.math.timeout_s
            with rec.step("audit.check"):
                audited, path = stage(spark, cfg, audit_st.audit_queries(
                    attempts.join(todo.select("query_id", "reference_answer"), "query_id"), a, workers, timeout),
                    "audit-rows")
                scratch.append(path)
            audited = audited.join(todo, "query_id")
            if judge is not None:
                with rec.step("audit.judge"):
                    opinions, path = stage(spark, cfg, audit_st.ask_judge(
                        audited.where(F.col("status") == DISAGREES),
                        json.dumps(dataclasses.asdict(for_tasks(judge))), workers, timeout), "audit-judge")
                    scratch.append(path)
                audited = audited.join(
                    opinions.withColumnRenamed("status", "judged"), "query_id", "left").withColumn(
                    "status", F.coalesce("judged", "status")).drop("judged")
            else:
                audited = audited.withColumn("judge_answer", F.lit(None).cast("string")).withColumn(
                    "status", F.when(F.col("status") == DISAGREES, PROPOSED).otherwise(F.col("status")))
            rows = audited.select(
                "query_id", "source", F.col("reference_answer").alias("reference"), "attempts", "answers",
                "majority_answer", "votes", "share", "teachers", "judge_answer", "status",
                F.lit(key).alias("audit_key"), F.lit(rec.run_id).alias("run_id"),
                F.current_timestamp().alias("audited_at"))
            with rec.step("audit.write"):
                for row in rows.groupBy("status").count().collect():
                    rec.count(f"audit.{row['status']}", row["count"])
                rec.wrote("reference_audit", merge_upsert(spark, cfg, "reference_audit", rows)["version"])
        if a.apply:
            with rec.step("audit.apply"):
                _apply_revisions(spark, cfg, rec)
    finally:
        for path in scratch:
            remove_path(spark, path)
    c = rec.counts
    print(f"prepare: audited {c.get('audit.todo', 0)} math references: {c.get('audit.proposed', 0)} proposed, "
          f"{c.get('audit.disputed', 0)} disputed; revised {c.get('audit.revised', 0)}")


def _audit_key(cfg) -> str:
    """What decides an audit's verdicts: its rules and, when it asks one, the judge's version."""
    a = cfg.prepare.reference_audit
    judge = cfg.verify.judge if a.ask_judge else None
    return audit_key(a, judge_version(judge_identity(judge)) if judge else None)


def _apply_revisions(spark, cfg, rec) -> None:
    """Each proposed revision: the query's attempts lose their verdicts (generate verifies them again, against the
    new reference, without generating), then the reference is replaced, then the audit row says `applied`. In that
    order, so a crash in between re-applies on the next run and never leaves old verdicts on a new reference."""
    from distill.stages.generate import VERIFY_COLUMNS

    # a few rows (revisions are rare): collected, so no write below re-reads the table it changes
    revisions = read_table(spark, cfg, "reference_audit").where(F.col("status") == PROPOSED).select(
        "query_id", "majority_answer").collect()
    rec.count("audit.revised", len(revisions))
    if not revisions:
        return
    proposed = spark.createDataFrame(revisions, "query_id string, majority_answer string")
    attempts = read_table(spark, cfg, "attempts")
    cleared = [*VERIFY_COLUMNS, "verified_at", "accepted"]
    unverified = attempts.join(proposed, "query_id", "left_semi").select(
        *TABLES["attempts"].keys, *[F.lit(None).cast(attempts.schema[c].dataType).alias(c) for c in cleared])
    rec.wrote("attempts", merge_update(spark, cfg, "attempts", unverified, cleared)["version"])
    crash_point("prepare.unverified")  # the verdicts are gone, the references not replaced yet
    rec.wrote("queries", merge_update(spark, cfg, "queries", proposed.withColumnRenamed(
        "majority_answer", "reference_answer"), ["reference_answer"])["version"])
    rec.wrote("reference_audit", merge_update(spark, cfg, "reference_audit", proposed.select(
        "query_id", F.lit(APPLIED).alias("status"), F.current_timestamp().alias("applied_at")),
        ["status", "applied_at"])["version"])


def _check_embedder(e) -> None:
    """A missing embedder is a config error before any table is written (the tasks would fail later)."""
    from distill.embedder import EmbedderSpec, resolve

    try:
        resolve(EmbedderSpec(e.path))
    except FileNotFoundError as err:
        raise SystemExit(f"config error: {err}") from None


def _vectors(spark, cfg, rec, query_texts, bench_texts):
    """Embed the texts not yet in the `embeddings` cache, then return (query vectors, benchmark vectors)."""
    from delta.tables import DeltaTable

    e = cfg.prepare.embedder
    model = f"{e.path}|{e.pooling}|{e.max_length}"
    texts = query_texts.select("text").unionByName(bench_texts.select("text")).distinct().withColumn(
        "text_hash", st.exact_text_hash(F.col("text")))
    cache_path = table_path(cfg, "embeddings")
    if DeltaTable.isDeltaTable(spark, cache_path):
        cached = read_table(spark, cfg, "embeddings").filter(F.col("model") == model).select("text_hash")
        missing = texts.join(cached, "text_hash", "left_anti")
    else:
        missing = texts
    missing = missing.persist()
    n_missing = missing.count()
    rec.count("embedded", n_missing)
    if n_missing:
        parallelism = spark.sparkContext.defaultParallelism
        # one task per core (and more for big inputs), one torch thread per task: no oversubscription
        parts = max(parallelism, n_missing // 20_000)
        threads = int(spark.conf.get("spark.task.cpus", "1"))
        with rec.watch("texts embedded", n_missing) as counter:
            embedded = st.embed_texts(missing.repartition(parts), e, threads, counter).withColumn(
                "model", F.lit(model))
            metrics = merge_new(spark, cfg, "embeddings", embedded)
        rec.wrote("embeddings", metrics["version"])
    missing.unpersist()
    cache = read_table(spark, cfg, "embeddings").filter(F.col("model") == model).select("text_hash", "vector")

    def attach(df):
        return df.withColumn("text_hash", st.exact_text_hash(F.col("text"))).join(cache, "text_hash").drop(
            "text_hash", "text")

    return attach(query_texts), attach(bench_texts)
