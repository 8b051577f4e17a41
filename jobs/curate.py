"""curate: decide `keep` and `reject_reason` for every scored `sft` row from the thresholds in `curate:`
(rules in distill.stages.curate). It reads score columns only: a new threshold re-decides without scoring
anything again. Only rows whose decision changes are written.

The table version this run leaves is each teacher's dataset snapshot (`sft VERSION AS OF v WHERE teacher = ...
AND keep`); it is recorded in `runs` (table_versions.sft), and `export` reads that version.
"""

from __future__ import annotations

from distill.stages.curate import decide
from distill.tables import current_version, ensure_table, merge_update, read_table, table_path
from pyspark.sql import functions as F

HELP = "decide keep / reject_reason in `sft` from the thresholds in `curate:` (no re-scoring)"


def add_arguments(parser) -> None:
    pass


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, table_path(cfg, "sft")):
        raise SystemExit("curate: no `sft` table yet; run score first")
    sft = read_table(spark, cfg, "sft")
    with rec.step("decide"):
        decided = decide(sft, cfg.curate)
        changed = decided.where(~F.col("keep").eqNullSafe(F.col("decided_keep"))
                                | ~F.col("reject_reason").eqNullSafe(F.col("decided_reason"))).select(
            "query_id", "teacher", F.col("decided_keep").alias("keep"),
            F.col("decided_reason").alias("reject_reason"), F.current_timestamp().alias("curated_at")).cache()
        n = changed.count()
        # The snapshot: the version this run's write made, or the current one when nothing changed.
        version = (merge_update(spark, cfg, "sft", changed, ["keep", "reject_reason", "curated_at"])["version"] if n
                   else current_version(ensure_table(spark, cfg, "sft")))
        changed.unpersist()
    rec.count("redecided", n)
    rec.wrote("sft", version)
    _account(rec, read_table(spark, cfg, "sft"))


def _account(rec, sft) -> None:
    rows = sft.groupBy("teacher", "keep", "reject_reason").count().collect()
    per: dict[str, dict] = {}
    for r in rows:
        t = per.setdefault(r["teacher"], {"kept": 0, "rejected": 0, "pending": 0, "reasons": {}})
        if r["keep"] is None:
            t["pending"] += r["count"]
        elif r["keep"]:
            t["kept"] += r["count"]
        else:
            t["rejected"] += r["count"]
            t["reasons"][r["reject_reason"]] = r["count"]
    for teacher, t in sorted(per.items()):
        rec.count(f"{teacher}.kept", t["kept"])
        rec.count(f"{teacher}.rejected", t["rejected"])
        if t["pending"]:
            rec.count(f"{teacher}.pending", t["pending"])
        for reason, c in t["reasons"].items():
            rec.count(f"{teacher}.rejected.{reason}", c)
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(t["reasons"].items())) or "none"
        pending = f", {t['pending']} not scored yet" if t["pending"] else ""
        print(f"curate: {teacher}: {t['kept']} kept, {t['rejected']} rejected ({reasons}){pending}")
    print(f"curate: the datasets are `sft` version {rec.table_versions['sft']} (WHERE teacher = ... AND keep)")
