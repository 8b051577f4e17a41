"""export: write each teacher's kept rows of the curated `sft` snapshot as SFT datasets.

    <output_dir>/export/<teacher>/jsonl/part-*.json      one {"messages": [...], provenance...} per line
    <output_dir>/export/<teacher>/parquet/part-*.parquet the same rows
    <output_dir>/export/<teacher>/manifest.json          counts, sft version, config hash, how to load

`messages` is the conversation the teacher saw (system prompt and user turns) followed by the assistant's
`<think>…</think><answer>…</answer>` response. Provenance columns: query_id, source, category, teacher,
attempt, verify_score, verify_status, ppl, n_tokens. The rows come from the `sft` version the last successful
`curate` run recorded (or --version), so later scoring never leaks undecided rows into an export. Each
teacher's folder is written aside and moved into place whole.

    datasets.load_dataset("json", data_files="out/export/teacher-a/jsonl/*.json")
    datasets.load_dataset("parquet", data_files="out/export/teacher-a/parquet/*.parquet")
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from distill.ids import stable_id
from distill.runs import curated_version
from distill.spark import exists, list_files, read_text, remove_path, replace_path, resolve_path, write_text
from distill.tables import table_path
from pyspark.sql import functions as F

HELP = "write each teacher's kept `sft` rows as JSONL + Parquet chat datasets with a manifest"

PROVENANCE = ("query_id", "source", "category", "teacher", "attempt", "verify_score", "verify_status", "ppl",
              "n_tokens")
SUFFIX = {"jsonl": ".json", "parquet": ".parquet"}


def add_arguments(parser) -> None:
    parser.add_argument("--version", type=int, default=None,
                        help="the `sft` version to export (default: the one the last curate run recorded)")


def chat_rows(sft):
    """sft rows -> export rows: messages with the assistant's response appended, then provenance."""
    assistant = F.struct(F.lit("assistant").alias("role"), F.col("response").alias("content"))
    return sft.select(F.concat("messages", F.array(assistant)).alias("messages"), *PROVENANCE)


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, table_path(cfg, "sft")):
        raise SystemExit("export: no `sft` table yet; run score and curate first")
    curate_run, curate_hash = None, None
    if args.version is not None:
        version = args.version
    else:
        version, curate_run, curate_hash = curated_version(spark, cfg)
    sft = spark.read.format("delta").option("versionAsOf", version).load(table_path(cfg, "sft"))
    teachers = cfg.export.teachers or sorted(r["teacher"] for r in sft.select("teacher").distinct().collect())
    root = resolve_path(cfg.output_dir).rstrip("/") + "/export"
    config_hash = stable_id(cfg.to_json())[:16]
    for teacher in teachers:
        old = _unchanged(spark, f"{root}/{teacher}", version, config_hash, cfg.export.formats)
        if old is not None:  # a re-run: the same snapshot under the same config is there already
            rec.count(f"{teacher}.unchanged", old["rows"])
            print(f"export: {teacher}: {old['rows']} rows at {root}/{teacher} are sft version {version} under this "
                  f"config already (export run {old['export_run_id']}); not written again")
            continue
        with rec.step(f"export.{teacher}"):
            rows = chat_rows(sft.where((F.col("teacher") == teacher) & F.col("keep"))).orderBy("query_id")
            partial = f"{root}/.{teacher}.partial-{uuid.uuid4().hex[:8]}"
            files = {}
            try:
                for fmt in cfg.export.formats:
                    writer = rows.write.mode("overwrite")
                    if fmt == "jsonl":  # keep null fields: every line has every column, as `datasets` expects
                        writer.option("ignoreNullFields", "false").option("compression", "none").json(
                            f"{partial}/jsonl")
                    else:
                        writer.parquet(f"{partial}/parquet")
                    files[fmt] = [f"{fmt}/{name}" for name in list_files(spark, f"{partial}/{fmt}", SUFFIX[fmt])]
                counts = {r["category"]: r["count"] for r in rows.groupBy("category").count().collect()}
                manifest = {
                    "teacher": teacher, "rows": sum(counts.values()), "by_category": dict(sorted(counts.items())),
                    "sft_version": version, "curate_run_id": curate_run, "curate_config_hash": curate_hash,
                    "config_hash": config_hash, "export_run_id": rec.run_id,
                    "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "columns": ["messages", *PROVENANCE], "files": files,
                    "load": {fmt: f'datasets.load_dataset("{"json" if fmt == "jsonl" else fmt}", '
                                  f'data_files="{root}/{teacher}/{fmt}/*{SUFFIX[fmt]}")' for fmt in files},
                }
                write_text(spark, f"{partial}/manifest.json", json.dumps(manifest, indent=2) + "\n")
                replace_path(spark, partial, f"{root}/{teacher}")
            finally:
                remove_path(spark, partial)
        rec.count(f"{teacher}.exported", manifest["rows"])
        print(f"export: {teacher}: {manifest['rows']} rows -> {root}/{teacher} (sft version {version})")


def _unchanged(spark, folder: str, version: int, config_hash: str, formats) -> dict | None:
    """The manifest of the export in `folder` when it holds sft `version` made under this config (hash) in
    these formats, with every file it lists still there; otherwise None."""
    text = read_text(spark, f"{folder}/manifest.json")
    if text is None:
        return None
    m = json.loads(text)
    same = (m.get("sft_version"), m.get("config_hash"), sorted(m.get("files", {}))) == (
        version, config_hash, sorted(formats))
    return m if same and all(exists(spark, f"{folder}/{f}") for fs in m["files"].values() for f in fs) else None
