"""Ingest stages: input files -> parsed rows -> (new queries, quarantine rows).

`parse_files` reads and validates every line of every file (one file per task) with
`distill.records`; `split_parsed` decides, against what `queries` already holds, which rows are new
queries and which go to quarantine. Nothing here reads or writes tables: the job does.

A file read whole before (the same path and fingerprint, under the same parse settings: `file_key`) is
not read again: `ingest_files` remembers it, so a re-run costs only the new files.

Every input line ends in exactly one of these (the `ingest` counts add up to `lines`):
  inserted        a new query
  already_present the same id with the same content is in `queries` (a re-run)
  repeated        an identical line earlier in this batch (same id, same content)
  quarantined     with a reason; `id_conflict` when an id is reused for different content
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from distill.ids import canonical_json, stable_id
from distill.readers import detect_format, file_fingerprint, iter_jsonl, iter_parquet
from distill.records import Parsed, parse_line, parse_record
from distill.tables import CONSTRAINTS, MESSAGES, TEST_CASES


@dataclass(frozen=True)
class FileTask:
    source: str
    path: str
    format: str
    category: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    shape: str = "default"  # "am-release": rows of the a-m-team releases (distill.release_shape)


# Bump when a line parses into another row than before: every file is then read again.
PARSE_VERSION = 1


def file_key(task: FileTask, max_line_bytes: int, raw_limit: int) -> tuple[str, str, str]:
    """(path, fingerprint, parse key): a file that `ingest_files` holds with this key gives nothing new."""
    settings = [PARSE_VERSION, task.source, task.format, task.category, task.fields, max_line_bytes, raw_limit]
    if task.shape != "default":  # only then: files remembered before shapes existed keep their key
        settings.append(task.shape)
    settings = canonical_json(settings)
    try:
        fingerprint = file_fingerprint(task.path)
    except OSError:  # gone since it was listed: read (and quarantined as unreadable), never remembered
        fingerprint = ""
    return task.path, fingerprint, stable_id(settings)[:16]


PARSED_SCHEMA = (
    "ok boolean, source string, source_file string, line long, "
    f"query_id string, source_id string, category string, messages {MESSAGES}, reference_answer string, "
    f"test_cases {TEST_CASES}, constraints {CONSTRAINTS}, content_hash string, metadata string, "
    "reason string, detail string, raw string, raw_bytes long, raw_truncated boolean"
)
QUERY_FIELDS = ("query_id", "source_id", "category", "messages", "reference_answer", "test_cases",
                "constraints", "content_hash", "metadata")


def _raw_text(raw: bytes | None, limit: int) -> tuple[str | None, int, bool]:
    if raw is None:
        return None, 0, False
    return raw[:limit].decode("utf-8", "replace"), len(raw), len(raw) > limit


def _row(task: FileTask, line: int, parsed: Parsed, raw: bytes | None, raw_limit: int) -> tuple:
    text, size, truncated = _raw_text(raw, raw_limit)
    q = parsed.row or {}
    source = q.get("source", task.source)
    return (parsed.row is not None, source, task.path, line, *(q.get(f) for f in QUERY_FIELDS),
            parsed.reason, parsed.detail, text, size, truncated)


def parse_file(task: FileTask, max_line_bytes: int, raw_limit: int):
    """All parsed rows of one file, as tuples in PARSED_SCHEMA order. Plain Python; never raises."""
    import json

    mapping = dict(task.fields)
    try:
        if task.format == "parquet":
            for line, record in iter_parquet(task.path):
                raw = json.dumps(record, default=str, ensure_ascii=False).encode()
                parsed = parse_record(record, task.source, mapping, task.category, task.shape)
                yield _row(task, line, parsed, raw, raw_limit)
        else:
            for line, raw in iter_jsonl(task.path):
                parsed = parse_line(raw, task.source, max_line_bytes, mapping, task.category, task.shape)
                yield _row(task, line, parsed, raw, raw_limit)
    except Exception as err:  # an unreadable file is one quarantine row (line 0), not a failed job
        yield _row(task, 0, Parsed(None, "unreadable_file", f"{type(err).__name__}: {err}"[:500]), None, raw_limit)


def file_tasks(files_by_source: list[tuple[object, list[str]]]) -> list[FileTask]:
    """(SourceConfig-like, files) pairs -> one FileTask per file."""
    return [
        FileTask(src.name, path, detect_format(path, src.format), src.category, tuple(sorted(src.fields.items())),
                 getattr(src, "shape", "default"))
        for src, files in files_by_source
        for path in files
    ]


def parse_files(spark: SparkSession, tasks: list[FileTask], max_line_bytes: int, raw_limit: int) -> DataFrame:
    """Output: PARSED_SCHEMA, one row per input line (or one per unreadable file)."""
    rdd = spark.sparkContext.parallelize(tasks, max(1, len(tasks))).flatMap(
        lambda task: parse_file(task, max_line_bytes, raw_limit)
    )
    return spark.createDataFrame(rdd, PARSED_SCHEMA)


def split_parsed(parsed: DataFrame, existing: DataFrame | None, run_id: str) -> tuple[DataFrame, DataFrame]:
    """Input: parse_files' output and `queries`' (query_id, content_hash) or None.
    Output: (rows to insert into `queries`, rows to insert into `quarantine`), each with an `outcome`
    column (inserted | already_present | repeated for queries; quarantined for quarantine)."""
    now = F.current_timestamp()
    ok = parsed.filter("ok")
    # The first occurrence of an id in the batch is its candidate; later ones repeat it or conflict.
    first = Window.partitionBy("query_id").orderBy("source_file", "line")
    ok = (
        ok.withColumn("rank", F.row_number().over(first))
        .withColumn("first_hash", F.first("content_hash").over(first))
        .withColumn("first_at", F.first(F.concat_ws(":", "source_file", "line")).over(first))
    )
    if existing is None:
        existing = parsed.sparkSession.createDataFrame([], "query_id string, content_hash string")
    known = existing.select("query_id", F.col("content_hash").alias("known_hash"))
    ok = ok.join(known, "query_id", "left")
    outcome = (
        F.when(F.col("known_hash").isNotNull() & (F.col("known_hash") != F.col("content_hash")), "id_conflict")
        .when((F.col("rank") > 1) & (F.col("content_hash") != F.col("first_hash")), "id_conflict")
        .when(F.col("rank") > 1, "repeated")
        .when(F.col("known_hash").isNotNull(), "already_present")
        .otherwise("inserted")
    )
    ok = ok.withColumn("outcome", outcome)

    queries = ok.filter(F.col("outcome") != "id_conflict").select(
        *QUERY_FIELDS[:1], "source", *QUERY_FIELDS[1:],
        F.lit("new").alias("status"), F.lit(None).cast("string").alias("drop_reason"),
        "source_file", F.col("line").alias("source_line"),
        F.lit(run_id).alias("ingest_run_id"), now.alias("ingested_at"), "outcome",
    )
    conflict_detail = F.when(
        F.col("known_hash").isNotNull() & (F.col("known_hash") != F.col("content_hash")),
        F.lit("this id is already in `queries` with different content"),
    ).otherwise(F.concat(F.lit("this id was first used with different content at "), F.col("first_at")))
    conflicts = ok.filter(F.col("outcome") == "id_conflict").select(
        "source", "source_file", "line", F.lit("id_conflict").alias("reason"), conflict_detail.alias("detail"),
        "raw", "raw_bytes", "raw_truncated",
    )
    bad = parsed.filter(~F.col("ok")).select(
        "source", "source_file", "line", "reason", "detail", "raw", "raw_bytes", "raw_truncated"
    )
    quarantine = conflicts.unionByName(bad)
    quarantine = quarantine.select(
        _quarantine_id(quarantine).alias("quarantine_id"), "*",
        F.lit(run_id).alias("run_id"), now.alias("quarantined_at"), F.lit("quarantined").alias("outcome"),
    )
    return queries, quarantine


def _quarantine_id(df: DataFrame):
    # The same bad line in the same file maps to the same row on every re-run. Same digest as
    # distill.ids.stable_id("quarantine", file, line, raw), computed in the JVM.
    parts = F.concat_ws("\x1f", F.lit("quarantine"), "source_file", F.col("line").cast("string"),
                        F.coalesce("raw", F.lit("")))
    return F.substring(F.sha2(parts, 256), 1, 32)
