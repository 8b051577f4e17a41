"""generate: ask every teacher for a response to every kept query, verify it, and regenerate until it
passes (verify_score >= 0.9) or the pair has `generate.max_attempts` attempts.

The `attempts` table is the ledger and the cache. A run first verifies stored attempts that need it
(never verified, an infra_error, or made by an older verifier version: re-verified, not regenerated).
Then, in rounds, for every (query, teacher) pair still open:
  1. generate the next attempt (a deterministic seed per attempt) and, in the same task, verify it by
     the rule-based verifiers (math, code, instruction following);
  2. stage the round as Parquet (so the engines run exactly once although a MERGE reads its source twice);
  3. MERGE it into `attempts` keyed on (query_id, teacher, attempt);
  4. verify the categories that need the LLM judge in a pass of their own (a judge model in the teacher's
     task would evict the teacher's model).
A kill at any point loses at most the round in flight; a re-run finds every stored attempt and never
generates it again.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from distill.config import ConfigError
from distill.engines import check_engine, for_tasks
from distill.engines.replay import NO_RESPONSE
from distill.faults import crash_point
from distill.spark import cores_per_task, remove_path
from distill.stages import generate as st
from distill.tables import ensure_table, merge_new, merge_update, stage, table_path
from distill.verifiers import Verifiers
from pyspark.sql import functions as F

HELP = "ask the teachers, verify, regenerate until verify_score >= 0.9 or max_attempts (`attempts` table)"


def add_arguments(parser) -> None:
    parser.add_argument("--teacher", action="append", default=None, metavar="NAME",
                        help="only this teacher (repeatable; default: all configured)")


def _teachers(cfg, names):
    if not cfg.teachers:
        raise SystemExit("generate: no teachers configured (add `teachers:` to the config)")
    chosen = [t for t in cfg.teachers if names is None or t.name in names]
    unknown = sorted(set(names or ()) - {t.name for t in cfg.teachers})
    if unknown:
        raise SystemExit(f"generate: unknown teacher {unknown[0]!r} (configured: "
                         f"{', '.join(t.name for t in cfg.teachers)})")
    try:
        for i, t in enumerate(cfg.teachers):
            if t in chosen:
                check_engine(t, f"teachers.{i}")
        if cfg.verify.judge is not None:
            check_engine(cfg.verify.judge, "verify.judge")
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    return chosen


def _verify_spec(spark, cfg, verifiers: Verifiers) -> st.VerifySpec:
    versions = verifiers.versions()
    inline = tuple(c for c in versions if not verifiers.needs_judge(c))
    verify = cfg.verify
    if verify.judge is not None:  # the judge's model is opened in tasks too (versions keep the configured name)
        verify = dataclasses.replace(verify, judge=for_tasks(verify.judge))
    return st.VerifySpec(json.dumps(dataclasses.asdict(verify)), versions, cores_per_task(spark), inline)


def _with_acceptance(df, cfg):
    """accepted and verified_at for rows that carry a verification (null for rows still waiting)."""
    verified = F.col("verify_status").isNotNull()
    return st.accepted(df, cfg.generate.accept_no_verifier).withColumn(
        "accepted", F.when(verified, F.col("accepted"))).withColumn(
        "verified_at", F.when(verified, F.current_timestamp()))


def verify_pending(spark, cfg, rec, queries, spec: st.VerifySpec) -> int:
    """Verify stored attempts that need it (see stages.generate.stale); returns how many."""
    current = spark.createDataFrame([(c, v, ver) for c, (v, ver) in spec.versions.items()],
                                    "category string, verifier string, verifier_version string")
    attempts = spark.read.format("delta").load(table_path(cfg, "attempts"))
    todo = st.stale(attempts, current, cfg.generate.accept_no_verifier).join(
        queries.select("query_id", "messages", "reference_answer", "test_cases", "constraints"), "query_id")
    with rec.step("verify"), rec.watch("attempts verified", todo.count()) as counter:
        staged, path = stage(spark, cfg, st.verify(todo, spec, cfg.verify.partitions, counter), "verify")
        counts = {r["verify_status"]: r["count"] for r in staged.groupBy("verify_status").count().collect()}
        if counts:
            metrics = merge_update(spark, cfg, "attempts", _with_acceptance(staged, cfg),
                                   [*st.VERIFY_COLUMNS, "verified_at", "accepted"])
            rec.wrote("attempts", metrics["version"])
        remove_path(spark, path)
    for status, n in counts.items():
        rec.count(f"verified.{status}", n)
    rec.count("verified", sum(counts.values()))
    return sum(counts.values())


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    teachers = _teachers(cfg, args.teacher)
    if not DeltaTable.isDeltaTable(spark, table_path(cfg, "queries")):
        raise SystemExit("generate: no `queries` table yet; run ingest and prepare first")
    g = cfg.generate
    ensure_table(spark, cfg, "attempts")
    queries = (spark.read.format("delta").load(table_path(cfg, "queries")).where(F.col("status") == "kept")
               .select("query_id", "source_id", "category", "messages", "reference_answer", "test_cases",
                       "constraints"))
    spec = _verify_spec(spark, cfg, Verifiers(cfg.verify))
    partitions = g.partitions or spark.sparkContext.defaultParallelism
    finished: set[str] = set()
    verify_pending(spark, cfg, rec, queries, spec)  # left over from a crash, a new verifier version, ...
    for round_no in range(1, g.max_attempts + 1):
        attempts = spark.read.format("delta").load(table_path(cfg, "attempts"))
        pairs = {t.name: st.pending_pairs(queries, attempts, t.name, g.max_attempts).persist()
                 for t in teachers if t.name not in finished}
        try:
            total = sum(p.count() for p in pairs.values())  # persisted: the round generates exactly these
            if total == 0:
                break  # no open pairs left for any teacher
            stats = _round(spark, cfg, rec, teachers, pairs, total, spec, partitions, round_no)
        finally:
            for p in pairs.values():
                p.unpersist()
        _account(rec, teachers, stats, finished, round_no)
        print(f"generate: round {round_no}: " + ", ".join(
            f"{name} {s['ok']} new" for name, s in sorted(stats.items())))
        if any(s["unverified"] for s in stats.values()):
            verify_pending(spark, cfg, rec, queries, spec)  # the judged categories
    _summarize(spark, cfg, rec, [t.name for t in teachers])


def _round(spark, cfg, rec, teachers, pairs: dict, total: int, spec, partitions: int, round_no: int) -> dict:
    """One attempt for each open pair (pairs: teacher -> its pending pairs, `total` in all): generate, stage,
    add the answered ones to the ledger. Returns per-teacher figures (ok, errors, tokens, seconds, ...)."""
    g = cfg.generate
    with rec.step("generate"), rec.watch(f"round {round_no}: requests answered", total) as counter:
        outs = [st.generate(pairs[t.name], t, g.batch_size, partitions, spec, counter)
                for t in teachers if t.name in pairs]
        union = outs[0]
        for o in outs[1:]:
            union = union.unionByName(o)
        staged, path = stage(spark, cfg, union, f"generate-r{round_no}")
        stats = {r["teacher"]: r for r in staged.groupBy("teacher").agg(
            F.count("response").alias("ok"), F.count("error").alias("errors"),
            F.sum(F.when(F.col("error").startswith(NO_RESPONSE), 1).otherwise(0)).alias("missing"),
            F.first(F.when(~F.col("error").startswith(NO_RESPONSE), F.col("error")), ignorenulls=True)
            .alias("first_error"),
            F.sum((F.col("response").isNotNull() & F.col("verify_status").isNull()).cast("int"))
            .alias("unverified"),
            F.sum("tokens_in").alias("tokens_in"), F.sum("tokens_out").alias("tokens_out"),
            F.sum("gen_seconds").alias("seconds")).collect()}
        new = _with_acceptance(staged.where(F.col("error").isNull() & F.col("response").isNotNull()), cfg)
        new = new.drop("error").withColumn("run_id", F.lit(rec.run_id)).withColumn(
            "generated_at", F.current_timestamp())
        crash_point("generate.staged")
        if any(s["ok"] for s in stats.values()):
            metrics = merge_new(spark, cfg, "attempts", new)
            rec.wrote("attempts", metrics["version"])
        remove_path(spark, path)
        crash_point("generate.merged")
    return stats


def _account(rec, teachers, stats, finished: set, round_no: int) -> None:
    """Per-teacher costs into `runs`; a teacher with nothing new is finished; one whose every request failed
    in the first round stops the job (an unreachable endpoint, a broken model) with the engine's own error."""
    for t in teachers:
        s = stats.get(t.name)
        if s is None or s["ok"] == 0:
            finished.add(t.name)  # nothing open, or nothing more this engine can give now
        if s is None:
            continue
        rec.count(f"{t.name}.generated", s["ok"])
        rec.count(f"{t.name}.tokens_in", s["tokens_in"] or 0)
        rec.count(f"{t.name}.tokens_out", s["tokens_out"] or 0)
        key = f"engine_s.{t.name}"
        rec.timings[key] = round(rec.timings.get(key, 0.0) + (s["seconds"] or 0.0), 3)
        failed = s["errors"] - s["missing"]
        if failed:
            rec.count(f"{t.name}.errors", failed)
            print(f"generate: {t.name}: {failed} requests failed (asked again next run); first: "
                  f"{s['first_error']}", file=sys.stderr)
            if s["ok"] == 0 and round_no == 1:
                raise RuntimeError(f"teacher {t.name!r}: all {failed} requests failed; first error: "
                                   f"{s['first_error']}")


def _summarize(spark, cfg, rec, names) -> None:
    """Per teacher, from the ledger: attempts, accepted pairs, attempts per accepted response."""
    attempts = spark.read.format("delta").load(table_path(cfg, "attempts")).where(F.col("teacher").isin(names))
    rows = attempts.groupBy("teacher").agg(
        F.count("*").alias("attempts"), F.countDistinct("query_id").alias("pairs"),
        F.sum(F.col("accepted").cast("int")).alias("accepted")).collect()
    for r in sorted(rows, key=lambda r: r["teacher"]):
        rec.count(f"{r['teacher']}.attempts_total", r["attempts"])
        rec.count(f"{r['teacher']}.accepted_total", r["accepted"] or 0)
        per = r["attempts"] / r["accepted"] if r["accepted"] else float("nan")
        print(f"generate: {r['teacher']}: {r['pairs']} queries, {r['attempts']} attempts, "
              f"{r['accepted'] or 0} accepted ({per:.2f} attempts per accepted response)")
