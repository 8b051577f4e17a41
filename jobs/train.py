"""train: fine-tune the students on the curated `sft` rows, with Horovod (or FSDP through TorchDistributor).

Every student of `train.students` (one per teacher in the paper; without the list, one student `train.name`
on `train.teachers`) starts from the same base model `train.student` and gets the same recipe:

    <train.root>/<student>/data-<set key>/   the packed training set: parquet/, train.arrow, manifest.json
    <train.root>/<student>/run-<train key>/  checkpoints/, metrics.jsonl, model/ (the trained student)

(train.root defaults to <output_dir>/train.) Per student:

1. pack: the kept rows of its teachers from the `sft` version the last curate run recorded (or
   `train.sft_version`) are tokenized with the base model's chat template and packed into rows of at most
   `train.max_len` tokens (stages/train.py). The set is keyed by what it is made of (the rows' content,
   teachers, tokenizer, max_len, packer version): a re-run with the same inputs reuses it.
2. train: `train.num_proc` workers run distill.training.loop.train, launched from Spark
   (distill.training.launch): every student that is not trained yet, one after another in one launch. The
   run folder is keyed by the set, the base model and the recipe: a re-run resumes from its newest
   checkpoint, and one that finished does nothing.
3. record: every step's metrics into `train_metrics`, the totals into `runs` (train.<student>.* and their
   sums train.*), and the student into `students` (teachers, sft version, keys, model path), where
   `evaluate` finds it by name.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from distill.ids import canonical_json, model_fingerprint, stable_id
from distill.spark import resolve_path
from distill.stages import train as st
from distill.tables import ensure_table, merge_new, merge_upsert, rows_by_key, table_path
from pyspark.sql import functions as F

from jobs.export import curated_version

HELP = "fine-tune the student on the curated data (packing, Horovod or FSDP, checkpoints, resume)"

# TrainConfig fields that do not change what is trained (how many processes, where): not part of the key
NOT_RECIPE = {"student", "students", "teachers", "sft_version", "max_len", "pack_rows_per_partition", "root", "name",
              "num_proc", "threads", "keep_checkpoints", "checkpoint_every", "launcher", "use_gpu"}


def add_arguments(parser) -> None:
    pass


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    t = cfg.train
    if not t.student:
        raise SystemExit("config error: train.student: no student model given (a local model folder)")
    if not (Path(t.student) / "config.json").is_file():
        raise SystemExit(f"config error: train.student: no model at {t.student!r} (a folder with config.json)")
    root = resolve_path(t.root) if t.root else resolve_path(cfg.output_dir).rstrip("/") + "/train"
    if "://" in root or root.startswith("file:"):
        raise SystemExit(f"config error: train.root: training needs a filesystem path every worker sees (a "
                         f"shared mount), not {root!r}; set train.root")
    if not DeltaTable.isDeltaTable(spark, table_path(cfg, "sft")):
        raise SystemExit("train: no `sft` table yet; run score and curate first")
    version = t.sft_version if t.sft_version is not None else curated_version(spark, cfg, "train")[0]
    sft = spark.read.format("delta").option("versionAsOf", version).load(table_path(cfg, "sft"))
    students = [(st_.name, st_.teachers) for st_ in t.students] or [
        (t.name, t.teachers or sorted(r["teacher"] for r in sft.select("teacher").distinct().collect()))]
    recorded = {n: (r["train_key"], r["model_path"]) for n, r in rows_by_key(spark, cfg, "students").items()}
    planned = [_plan_student(spark, cfg, rec, sft, version, Path(root), name, teachers) for name, teachers in students]
    todo = [p for p in planned if not (Path(p["spec"]["out_dir"]) / "model" / "config.json").is_file()]
    for p in planned:
        if p not in todo:
            print(f"train: {p['row']['student']}: {p['spec']['out_dir']}/model is already trained; nothing to do")
    results = {}
    if todo:
        from distill.training.launch import launch

        with rec.step("train"):  # every student in one launch: starting the workers is paid once
            results = dict(zip([p["row"]["student"] for p in todo], launch(spark, [p["spec"] for p in todo]),
                               strict=True))
    steps, trained = [], []
    for p in planned:
        row = p["row"]
        steps += _record(rec, row["student"], Path(p["spec"]["out_dir"]), row["train_key"],
                         results.get(row["student"], {"start_step": None}))
        print(f"train: {row['student']}: the trained student is {row['model_path']}")
        if recorded.get(row["student"]) != (row["train_key"], row["model_path"]):
            trained.append(row)
    ensure_table(spark, cfg, "train_metrics")
    if steps:  # steps already there are kept
        df = spark.createDataFrame(steps).withColumn("run_id", F.lit(rec.run_id))
        rec.wrote("train_metrics", merge_new(spark, cfg, "train_metrics", df)["version"])
    if trained:
        df = spark.createDataFrame(trained, STUDENT_ROW).withColumn("run_id", F.lit(rec.run_id)).withColumn(
            "trained_at", F.current_timestamp())
        rec.wrote("students", merge_upsert(spark, cfg, "students", df)["version"])


STUDENT_ROW = ("student string, teachers array<string>, sft_version long, set_key string, train_key string, "
               "base_model string, model_path string, samples long")


def _plan_student(spark, cfg, rec, sft, version: int, root: Path, name: str, teachers: list[str]) -> dict:
    """Pack one student's set; returns its training run (`spec`) and its `students` row (`row`)."""
    t = cfg.train
    base = root / name
    # keyed by content, not by the sft version: a pipeline re-run that changes no row must not train again
    rows = st.training_rows(sft, teachers)
    n, content = st.content_key(rows)
    set_key = stable_id(content, canonical_json(teachers),
                        model_fingerprint(t.student, tokenizer_only=True), str(t.max_len), st.PACKER_VERSION)
    data = base / f"data-{set_key}"

    with rec.step(f"pack {name}"):
        if not (data / "manifest.json").is_file():
            _pack(spark, cfg, rows, n, teachers, version, data)
        manifest = json.loads((data / "manifest.json").read_text())
    for k in ("samples", "packed_rows", "too_long", "tokens", "target_tokens"):
        rec.count(f"train.{name}.{k}", manifest[k])
        rec.count(f"train.{k}", manifest[k])
    print(f"train: {name}: {manifest['samples']} samples from {', '.join(teachers)} (sft version {version}) packed "
          f"into {manifest['packed_rows']} rows of at most {t.max_len} tokens ({manifest['fill']:.1%} full); "
          f"{manifest['too_long']} too long")
    if manifest["packed_rows"] == 0:
        raise SystemExit(f"train: {name}: nothing to train on (no kept rows of {', '.join(teachers)})")

    recipe = {k: v for k, v in dataclasses.asdict(t).items() if k not in NOT_RECIPE}
    train_key = stable_id(set_key, model_fingerprint(t.student), canonical_json(recipe))
    out = base / f"run-{train_key}"
    out.mkdir(parents=True, exist_ok=True)
    spec = {**dataclasses.asdict(t), "student": str(Path(t.student).resolve()), "data": str(data / "train.arrow"),
            "out_dir": str(out)}
    return {"spec": spec, "row": {
        "student": name, "teachers": list(teachers), "sft_version": int(version), "set_key": set_key,
        "train_key": train_key, "base_model": str(Path(t.student).resolve()), "model_path": str(out / "model"),
        "samples": int(manifest["samples"])}}


def _pack(spark, cfg, rows, n: int, teachers, version, data: Path) -> None:
    """Write the packed set (Parquet from Spark, then one memory-mappable Arrow file) and its manifest, aside
    and renamed into place."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    t = cfg.train
    partial = data.with_name(data.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partitions = max(1, -(-n // t.pack_rows_per_partition))
    st.pack_rows(rows, str(Path(t.student).resolve()), t.max_len, partitions).write.parquet(
        (partial / "parquet").as_uri())  # a file: URI, never the cluster's default filesystem
    packed = ds.dataset(str(partial / "parquet"), format="parquet")
    too_long: list[str] = []
    figures = {"packed_rows": 0, "tokens": 0, "target_tokens": 0, "samples": 0}
    columns = ["input_ids", "labels", "seq_lens", "loss_tokens"]
    schema = pa.schema([packed.schema.field(c) for c in columns])
    with pa.OSFile(str(partial / "train.arrow"), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for fragment in sorted(packed.get_fragments(), key=lambda f: f.path):  # part files in a fixed order
            table = fragment.to_table()
            for keys in table.column("too_long").to_pylist():
                too_long += keys
            table = table.filter(pc.greater(pc.list_value_length(table.column("input_ids")), 0))
            figures["packed_rows"] += table.num_rows
            figures["tokens"] += int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0)
            figures["target_tokens"] += int(pc.sum(table.column("loss_tokens")).as_py() or 0)
            figures["samples"] += int(pc.sum(pc.list_value_length(table.column("seq_lens"))).as_py() or 0)
            writer.write_table(table.select(columns))
    manifest = {**figures, "too_long": len(too_long), "too_long_keys": too_long[:100], "sft_version": version,
                "teachers": teachers, "student_tokenizer": str(Path(t.student).resolve()), "max_len": t.max_len,
                "packer_version": st.PACKER_VERSION, "input_rows": n,
                "fill": figures["tokens"] / max(1, figures["packed_rows"] * t.max_len),
                "files": {"parquet": "parquet/", "arrow": "train.arrow"}}
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(data, ignore_errors=True)
    partial.rename(data)


def _record(rec, name: str, out: Path, train_key: str, result: dict) -> list[dict]:
    """Totals into `runs` (train.<student>.* and their sums over the students, train.*); returns the steps
    from metrics.jsonl, with their train_key, for `train_metrics`."""
    path = out / "metrics.jsonl"
    steps = [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
    ran = [s for s in steps if result.get("start_step") is not None and s["step"] > result["start_step"]]
    for prefix in (f"train.{name}.", "train."):
        rec.count(f"{prefix}steps", len(steps))
        rec.count(f"{prefix}steps_run", len(ran))
        if result.get("start_step"):
            rec.count(f"{prefix}resumed_from_step", result["start_step"])
    if ran:
        rate = sum(s["tokens"] for s in ran) / sum(s["seconds"] for s in ran)
        rec.timings[f"train.{name}.tokens_per_s"] = round(rate, 1)
        print(f"train: {name}: {len(ran)} steps, loss {ran[0]['loss']:.4f} -> {ran[-1]['loss']:.4f}, "
              f"{rate:,.0f} tokens/s")
    return [{**s, "train_key": train_key} for s in steps]
