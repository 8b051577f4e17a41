"""A teacher's kept `sft` rows as a chat dataset on disk (the `export` job's work, see jobs/export.py).

    <root>/<teacher>/jsonl/part-*.json      one {"messages": [...], provenance...} per line
    <root>/<teacher>/parquet/part-*.parquet the same rows
    <root>/<teacher>/manifest.json          counts, sft version, config hash, how to load

Each teacher's folder is written aside and moved into place whole: a reader sees the old export or the new one.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distill.spark import exists, list_files, read_text, remove_path, replace_path, write_text

PROVENANCE = ("query_id", "source", "category", "teacher", "attempt", "verify_score", "verify_status", "ppl",
              "n_tokens")
SUFFIX = {"jsonl": ".json", "parquet": ".parquet"}


def chat_rows(sft: DataFrame) -> DataFrame:
    """sft rows -> export rows: messages with the assistant's response appended, then provenance."""
    assistant = F.struct(F.lit("assistant").alias("role"), F.col("response").alias("content"))
    return sft.select(F.concat("messages", F.array(assistant)).alias("messages"), *PROVENANCE)


def write_export(spark, rows: DataFrame, folder: str, formats, manifest: dict) -> dict:
    """Write `rows` (chat_rows) in `formats` to `folder`, replacing what is there whole, and return the manifest
    written beside them: `manifest` plus rows, by_category, columns, files, load and exported_at."""
    root, teacher = folder.rstrip("/").rsplit("/", 1)
    partial = f"{root}/.{teacher}.partial-{uuid.uuid4().hex[:8]}"
    files = {}
    try:
        for fmt in formats:
            writer = rows.write.mode("overwrite")
            if fmt == "jsonl":  # keep null fields: every line has every column, as `datasets` expects
                writer.option("ignoreNullFields", "false").option("compression", "none").json(f"{partial}/jsonl")
            else:
                writer.parquet(f"{partial}/parquet")
            files[fmt] = [f"{fmt}/{name}" for name in list_files(spark, f"{partial}/{fmt}", SUFFIX[fmt])]
        counts = {r["category"]: r["count"] for r in rows.groupBy("category").count().collect()}
        manifest = {
            "teacher": teacher, "rows": sum(counts.values()), "by_category": dict(sorted(counts.items())),
            **manifest, "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "columns": ["messages", *PROVENANCE], "files": files,
            "load": {fmt: f'datasets.load_dataset("{"json" if fmt == "jsonl" else fmt}", '
                          f'data_files="{folder}/{fmt}/*{SUFFIX[fmt]}")' for fmt in files},
        }
        write_text(spark, f"{partial}/manifest.json", json.dumps(manifest, indent=2) + "\n")
        replace_path(spark, partial, folder)
    finally:
        remove_path(spark, partial)
    return manifest


def unchanged_export(spark, folder: str, version: int, config_hash: str, formats) -> dict | None:
    """The manifest of the export in `folder` when it holds sft `version` made under this config (hash) in
    these formats, with every file it lists still there; otherwise None."""
    text = read_text(spark, f"{folder}/manifest.json")
    if text is None:
        return None
    m = json.loads(text)
    same = (m.get("sft_version"), m.get("config_hash"), sorted(m.get("files", {}))) == (
        version, config_hash, sorted(formats))
    return m if same and all(exists(spark, f"{folder}/{f}") for fs in m["files"].values() for f in fs) else None
