"""maintain: keep the Delta tables healthy, on a schedule or after big runs (not part of the pipeline).

For every table of the warehouse (or `maintain.tables`):
  1. OPTIMIZE: compact the many small files MERGEs leave behind into few large ones. A data-neutral
     commit: readers, the change feed and every job see the same rows.
  2. VACUUM: delete the data files no table version within `maintain.retain_hours` needs (the retention is
     set on the table as delta.deletedFileRetentionDuration, where Delta reads it). Time travel
     (`VERSION AS OF`) then reaches back that far, and never less far than the `sft` version the last
     curate recorded: export and train read that snapshot, so its files are kept however old it is.
Then it removes scratch folders under `_staging/` that killed runs left behind (older than
`maintain.staging_max_age_hours`; a running job's own scratch is younger).

Run it when no job is writing: OPTIMIZE and a concurrent MERGE touching the same files conflict, and
Delta makes one of them fail (the failed job is re-run like any other).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

from distill.spark import children_older_than, remove_path
from distill.tables import TABLES, register_tables, table_path

HELP = "compact (OPTIMIZE) and vacuum the tables; remove stale scratch folders (policy in `maintain:`)"


def add_arguments(parser) -> None:
    parser.add_argument("--table", action="append", default=None, metavar="NAME",
                        help="only this table (repeatable; default: maintain.tables, else all)")


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    m = cfg.maintain
    names = args.table or m.tables
    unknown = sorted(set(names) - set(TABLES))
    if unknown:
        raise SystemExit(f"maintain: unknown table {unknown[0]!r} (tables: {', '.join(TABLES)})")
    present = register_tables(spark, cfg)
    keep_hours = _retention(spark, cfg)
    listing = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
    if listing not in cfg.spark.conf:
        # VACUUM lists the table's folders with this many tasks; Spark's default (10,000) turns a small
        # table's vacuum into minutes of empty tasks. A few per core is plenty; the config can set more.
        spark.conf.set(listing, str(4 * spark.sparkContext.defaultParallelism))
    if m.allow_short_retention:
        # Delta refuses a retention under 7 days unless told; the config said nothing else writes here.
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
    for name in [n for n in present if not names or n in names]:
        target = DeltaTable.forPath(spark, table_path(cfg, name))
        with rec.step(name):
            before = target.detail().first()["numFiles"]
            if m.optimize:
                target.optimize().executeCompaction()
            if m.vacuum:
                _set_retention(spark, target, table_path(cfg, name), keep_hours.get(name, m.retain_hours))
                target.vacuum()  # Delta 4 takes the retention from the table, not from an argument
                deleted = _vacuumed_files(target)
                rec.count(f"{name}.files_deleted", deleted)
            after = target.detail().first()["numFiles"]
        rec.count(f"{name}.files_before", before)
        rec.count(f"{name}.files_after", after)
        print(f"maintain: {name}: {before} -> {after} files"
              + (f"; vacuum deleted {deleted} (retained {keep_hours.get(name, m.retain_hours):g} h)"
                 if m.vacuum else ""))
    stale = children_older_than(spark, table_path(cfg, "_staging"), m.staging_max_age_hours * 3600)
    for path in stale:
        remove_path(spark, path)
    rec.count("staging_removed", len(stale))
    print(f"maintain: removed {len(stale)} stale scratch folders")


def _retention(spark, cfg) -> dict[str, float]:
    """Per-table retention in hours where it must exceed the configured one: `sft` keeps the curated snapshot
    (and `train.sft_version`) readable."""
    from delta.tables import DeltaTable
    from distill.runs import curated_version

    if not DeltaTable.isDeltaTable(spark, table_path(cfg, "sft")):
        return {}
    try:
        versions = [curated_version(spark, cfg, "maintain")[0]]
    except SystemExit:  # never curated: nothing to protect
        versions = []
    if cfg.train.sft_version is not None:
        versions.append(cfg.train.sft_version)
    if not versions:
        return {}
    history = DeltaTable.forPath(spark, table_path(cfg, "sft")).history().select("version", "timestamp")
    oldest = history.where(history.version == min(versions)).first()
    if oldest is None:
        return {}
    age_h = (datetime.now(timezone.utc) - oldest["timestamp"].replace(tzinfo=timezone.utc)).total_seconds() / 3600
    # The snapshot's files can have been replaced by the very next commit: keep everything since it was made.
    return {"sft": max(cfg.maintain.retain_hours, math.ceil(age_h) + 1.0)}


def _set_retention(spark, target, path: str, hours: float) -> None:
    """Record the retention on the table (delta.deletedFileRetentionDuration), where VACUUM reads it."""
    value = f"interval {round(hours * 3600)} seconds"
    if (target.detail().first()["properties"] or {}).get("delta.deletedFileRetentionDuration") != value:
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES (delta.deletedFileRetentionDuration = '{value}')")


def _vacuumed_files(target) -> int:
    """Files the last VACUUM deleted, from its history entry (VACUUM END)."""
    row = target.history(1).select("operation", "operationMetrics").first()
    if row is None or row["operation"] != "VACUUM END":
        return 0
    return int((row["operationMetrics"] or {}).get("numDeletedFiles", 0))
