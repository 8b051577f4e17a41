"""ingest: input files (JSONL or Parquet) -> `queries`, and bad lines -> `quarantine`.

Re-running with the same input changes nothing (ids are deterministic and MERGE inserts only new
keys), and costs only a listing: a file read whole before is in `ingest_files` and is not read again
(`--all` reads every file). The job exits 0 even when every line is bad: bad input is data, recorded with
its reason.
"""

from __future__ import annotations

import os

from distill.config import SourceConfig
from distill.readers import list_files
from distill.stages.ingest import file_key, file_tasks, parse_files, split_parsed
from distill.tables import TABLES, ensure_table, merge_new, read_table, table_path
from pyspark.sql import functions as F

HELP = "read JSONL/Parquet sources into `queries`; bad lines go to `quarantine` with a reason"


def add_arguments(parser) -> None:
    parser.add_argument("--input", action="append", metavar="PATH",
                        help="file, directory or glob to ingest instead of the config's ingest.sources (repeatable)")
    parser.add_argument("--source", help="source name for --input rows that carry none (default: the file name)")
    parser.add_argument("--all", action="store_true",
                        help="read every file again, also those `ingest_files` holds as read (e.g. after rows "
                             "were deleted from `queries`)")


def sources_from(cfg, args) -> list[SourceConfig]:
    if args.input:
        return [SourceConfig(name=args.source or os.path.basename(p.rstrip("/")).split(".")[0], path=p)
                for p in args.input]
    return cfg.ingest.sources


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    sources = sources_from(cfg, args)
    if not sources:
        raise SystemExit("ingest: nothing to read; pass --input PATH or set ingest.sources in the config")
    with rec.step("list"):
        listed = [(src, list_files(src.path)) for src in sources]
    for src, files in listed:
        if not files:
            # A typo in a path must not look like an empty corpus.
            raise SystemExit(f"ingest: source {src.name!r}: no input files at {src.path!r}")
        rec.count("files", len(files))
    tasks = file_tasks(listed)
    keys = {t.path: file_key(t, cfg.ingest.max_line_bytes, cfg.ingest.quarantine_raw_max_bytes) for t in tasks}
    queries_path = table_path(cfg, "queries")
    if not args.all and DeltaTable.isDeltaTable(spark, queries_path):
        read = read_files(spark, cfg)
        tasks = [t for t in tasks if keys[t.path] not in read]
        rec.count("files_unchanged", len(keys) - len(tasks))
    if not tasks:
        print(f"ingest: all {len(keys)} files were read before and have not changed; nothing to do")
        return

    with rec.step("parse"):
        parsed = parse_files(spark, tasks, cfg.ingest.max_line_bytes, cfg.ingest.quarantine_raw_max_bytes)
        parsed = parsed.persist()
        rec.count("lines", parsed.count())

    existing = None
    if DeltaTable.isDeltaTable(spark, queries_path):
        existing = read_table(spark, cfg, "queries").select("query_id", "content_hash")
    queries, quarantine = split_parsed(parsed, existing, rec.run_id)
    queries, quarantine = queries.persist(), quarantine.persist()
    for row in queries.groupBy("outcome").count().collect():
        rec.count(row["outcome"], row["count"])
    for row in quarantine.groupBy("reason").count().collect():
        rec.count("quarantined", row["count"])
        rec.count(f"quarantined.{row['reason']}", row["count"])

    with rec.step("write"):
        new = queries.filter(F.col("outcome") == "inserted").drop("outcome")
        for name, df, n in (("queries", new, rec.counts.get("inserted", 0)),
                            ("quarantine", quarantine.drop("outcome"), rec.counts.get("quarantined", 0))):
            if n:
                rec.wrote(name, merge_new(spark, cfg, name, df)["version"])
            else:  # nothing to add (a re-run): the table exists for queries, no MERGE reads it for nothing
                ensure_table(spark, cfg, name)
        # last: a file is remembered only once its rows are in (an unreadable one is tried again next time)
        done = parsed.groupBy("source_file").agg(F.count("*").alias("lines"), F.max(
            (F.col("reason") == "unreadable_file").cast("int")).alias("unreadable")).collect()
        sources = {t.path: t.source for t in tasks}
        files = [(*keys[r.source_file], sources[r.source_file], r.lines) for r in done
                 if not r.unreadable and keys[r.source_file][1]]
        if files:
            df = spark.createDataFrame(files, "source_file string, fingerprint string, parse_key string, "
                                              "source string, lines long").withColumn(
                "run_id", F.lit(rec.run_id)).withColumn("ingested_at", F.current_timestamp())
            rec.wrote("ingest_files", merge_new(spark, cfg, "ingest_files", df)["version"])
    for df in (parsed, queries, quarantine):
        df.unpersist()
    c = rec.counts
    print(f"ingest: {c.get('lines', 0)} lines from {c.get('files', 0)} files: {c.get('inserted', 0)} new queries, "
          f"{c.get('already_present', 0)} already present, {c.get('repeated', 0)} repeated, "
          f"{c.get('quarantined', 0)} quarantined" + (f"; {c['files_unchanged']} unchanged files not read again"
                                                     if c.get("files_unchanged") else ""))


def read_files(spark, cfg) -> set[tuple[str, str, str]]:
    """(path, fingerprint, parse key) of every file `ingest_files` holds as read whole."""
    from delta.tables import DeltaTable

    path = table_path(cfg, "ingest_files")
    if not DeltaTable.isDeltaTable(spark, path):
        return set()
    return {tuple(r) for r in read_table(spark, cfg, "ingest_files").select(*TABLES["ingest_files"].keys).collect()}
