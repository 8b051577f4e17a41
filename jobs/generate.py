"""generate: ask every teacher for a response to every kept query, verify it, and regenerate until it
passes (verify_score >= generate.threshold, 0.9 as in the paper) or the pair has `generate.max_attempts` attempts.

The `attempts` table is the ledger and the cache; the loop over it (verify what needs it, then rounds of
generate, stage, MERGE, judge) is distill.generation's, with the stop rule "until accepted". A kill at any
point loses at most the round in flight; a re-run finds every stored attempt and never generates it again.
"""

from __future__ import annotations

from distill.config import ConfigError
from distill.engines import check_engine, check_local_path
from distill.generation import generate_attempts, verify_spec
from distill.settled import Settled, path_fingerprint
from distill.tables import read_table, table_path
from pyspark.sql import functions as F

HELP = "ask the teachers, verify, regenerate until verify_score >= threshold or max_attempts (`attempts` table)"


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
        if cfg.verify.reward_model is not None:
            check_local_path(cfg.verify.reward_model.model, "verify.reward_model.model")
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    return chosen


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    teachers = _teachers(cfg, args.teacher)
    if not DeltaTable.isDeltaTable(spark, table_path(cfg, "queries")):
        raise SystemExit("generate: no `queries` table yet; run ingest and prepare first")
    # what decides the work besides the tables: which teachers, their replay files, the verifiers' versions
    engines = [(t.name, path_fingerprint(t.model) if t.engine == "replay" else "") for t in teachers]
    state = Settled(spark, cfg, rec, ("queries", "attempts"))
    if state.unchanged((engines, verify_spec(spark, cfg.verify).versions)):
        return
    if generate_attempts(spark, cfg, rec, teachers):
        state.settle()
    _summarize(spark, cfg, rec, [t.name for t in teachers])


def _summarize(spark, cfg, rec, names) -> None:
    """Per teacher, from the ledger: attempts, accepted pairs, attempts per accepted response."""
    attempts = read_table(spark, cfg, "attempts").where(F.col("teacher").isin(names))
    rows = attempts.groupBy("teacher").agg(
        F.count("*").alias("attempts"), F.countDistinct("query_id").alias("pairs"),
        F.sum(F.col("accepted").cast("int")).alias("accepted")).collect()
    for r in sorted(rows, key=lambda r: r["teacher"]):
        rec.count(f"{r['teacher']}.attempts_total", r["attempts"])
        rec.count(f"{r['teacher']}.accepted_total", r["accepted"] or 0)
        per = r["attempts"] / r["accepted"] if r["accepted"] else float("nan")
        print(f"generate: {r['teacher']}: {r['pairs']} queries, {r['attempts']} attempts, "
              f"{r['accepted'] or 0} accepted ({per:.2f} attempts per accepted response)")
