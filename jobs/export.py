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

from distill.exporting import chat_rows, unchanged_export, write_export
from distill.ids import stable_id
from distill.runs import curated_version
from distill.spark import resolve_path
from distill.tables import table_path
from pyspark.sql import functions as F

HELP = "write each teacher's kept `sft` rows as JSONL + Parquet chat datasets with a manifest"


def add_arguments(parser) -> None:
    parser.add_argument("--version", type=int, default=None,
                        help="the `sft` version to export (default: the one the last curate run recorded)")


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
        old = unchanged_export(spark, f"{root}/{teacher}", version, config_hash, cfg.export.formats)
        if old is not None:  # a re-run: the same snapshot under the same config is there already
            rec.count(f"{teacher}.unchanged", old["rows"])
            print(f"export: {teacher}: {old['rows']} rows at {root}/{teacher} are sft version {version} under this "
                  f"config already (export run {old['export_run_id']}); not written again")
            continue
        with rec.step(f"export.{teacher}"):
            rows = chat_rows(sft.where((F.col("teacher") == teacher) & F.col("keep"))).orderBy("query_id")
            manifest = write_export(spark, rows, f"{root}/{teacher}", cfg.export.formats, {
                "sft_version": version, "curate_run_id": curate_run, "curate_config_hash": curate_hash,
                "config_hash": config_hash, "export_run_id": rec.run_id})
        rec.count(f"{teacher}.exported", manifest["rows"])
        print(f"export: {teacher}: {manifest['rows']} rows -> {root}/{teacher} (sft version {version})")
