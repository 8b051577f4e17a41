"""ingest: input files (JSONL or Parquet) -> `queries`, and bad lines -> `quarantine`.

Re-running with the same input changes nothing (ids are deterministic and MERGE inserts only new
keys). The job exits 0 even when every line is bad: bad input is data, recorded with its reason.
"""

from __future__ import annotations

import os

from distill.config import SourceConfig
from distill.readers import list_files
from distill.stages.ingest import file_tasks, parse_files, split_parsed
from distill.tables import ensure_table, merge_new, table_path
from pyspark.sql import functions as F

HELP = "read JSONL/Parquet sources into `queries`; bad lines go to `quarantine` with a reason"


def add_arguments(parser) -> None:
    parser.add_argument("--input", action="append", metavar="PATH",
                        help="file, directory or glob to ingest instead of the config's ingest.sources (repeatable)")
    parser.add_argument("--source", help="source name for --input rows that carry none (default: the file name)")


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

    with rec.step("parse"):
        parsed = parse_files(spark, tasks, cfg.ingest.max_line_bytes, cfg.ingest.quarantine_raw_max_bytes)
        parsed = parsed.persist()
        rec.count("lines", parsed.count())

    queries_path = table_path(cfg, "queries")
    existing = None
    if DeltaTable.isDeltaTable(spark, queries_path):
        existing = spark.read.format("delta").load(queries_path).select("query_id", "content_hash")
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
    for df in (parsed, queries, quarantine):
        df.unpersist()
    c = rec.counts
    print(f"ingest: {c.get('lines', 0)} lines from {c.get('files', 0)} files: {c.get('inserted', 0)} new queries, "
          f"{c.get('already_present', 0)} already present, {c.get('repeated', 0)} repeated, "
          f"{c.get('quarantined', 0)} quarantined")
