"""Students: a training set built from given rows, and students trained on sets. `train` (a student per
teacher, from the curated `sft`) and `experiment` (a student per variant, from the variant's own rows) call the
same code, so a set or a run made by one is found by the other.

    <root>/<student>/data-<set key>/   the packed set: parquet/, train.arrow, manifest.json
    <root>/<student>/run-<train key>/  checkpoints/, metrics.jsonl, model/ (the trained student)

1. build_set: rows (query_id, teacher, messages, response) are tokenized with the base model's chat template
   and packed (stages/train.py). The set is keyed by what it is made of (the rows' content, teachers,
   tokenizer, max_len, packer version): the same rows again reuse it.
2. plan_run: the training run of a set with a TrainConfig; keyed by the set, the base model and the recipe.
3. train_all: every planned run without a model, one after another in one launch (starting the workers is
   paid once); a run resumes from its newest checkpoint. Metrics go to `train_metrics`, totals to `runs`
   (train.<student>.* and their sums train.*), and each student to `students`, where `evaluate` finds it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from pyspark.sql import functions as F

from distill.config import TrainConfig
from distill.ids import canonical_json, model_fingerprint, stable_id
from distill.spark import resolve_path
from distill.stages import train as st
from distill.tables import ensure_table, merge_new, merge_upsert, rows_by_key

# TrainConfig fields that do not change what is trained (how many processes, where): not part of the key
NOT_RECIPE = {"student", "students", "teachers", "sft_version", "max_len", "pack_rows_per_partition", "root", "name",
              "num_proc", "threads", "keep_checkpoints", "checkpoint_every", "launcher", "use_gpu",
              "loss_chunk_tokens"}  # how, not what: the chunked loss is the plain one's sum in another order

STUDENT_ROW = ("student string, teachers array<string>, sft_version long, set_key string, train_key string, "
               "base_model string, model_path string, samples long")


def train_root(cfg, t: TrainConfig, key: str = "train") -> Path:
    """Where sets and runs live (train.root, default <output_dir>/train), checked with the base model."""
    if not t.student:
        raise SystemExit(f"config error: {key}.student: no student model given (a local model folder)")
    if not (Path(t.student) / "config.json").is_file():
        raise SystemExit(f"config error: {key}.student: no model at {t.student!r} (a folder with config.json)")
    root = resolve_path(t.root) if t.root else resolve_path(cfg.output_dir).rstrip("/") + "/train"
    if "://" in root or root.startswith("file:"):
        raise SystemExit(f"config error: {key}.root: training needs a filesystem path every worker sees (a "
                         f"shared mount), not {root!r}; set train.root")
    return Path(root)


def build_set(spark, cfg, rec, t: TrainConfig, rows, root: Path, name: str, teachers: list[str],
              version: int | None, folder: str | None = None) -> dict:
    """Pack `rows` (query_id, teacher, messages, response) for student `name` (under root/`folder`, default the
    name), or find the set already packed from the same content. Returns {set_key, data, manifest}. `version`:
    the `sft` version the rows come from, kept in the manifest (None when they are a selection of their own)."""
    # keyed by content, not by a table version: a re-run that changes no row must not pack or train again
    n, content = st.content_key(rows)
    set_key = stable_id(content, canonical_json(teachers),
                        model_fingerprint(t.student, tokenizer_only=True), str(t.max_len), st.PACKER_VERSION)
    data = root / (folder or name) / f"data-{set_key}"
    with rec.step(f"pack {name}"):
        if not (data / "manifest.json").is_file():
            _pack(rows, n, t, teachers, version, data)
        manifest = json.loads((data / "manifest.json").read_text())
    for k in ("samples", "packed_rows", "too_long", "tokens", "target_tokens"):
        rec.count(f"train.{name}.{k}", manifest[k])
        rec.count(f"train.{k}", manifest[k])
    source = "" if version is None else f" (sft version {version})"
    print(f"train: {name}: {manifest['samples']} samples from {', '.join(teachers)}{source} packed "
          f"into {manifest['packed_rows']} rows of at most {t.max_len} tokens ({manifest['fill']:.1%} full); "
          f"{manifest['too_long']} too long")
    if manifest["packed_rows"] == 0:
        raise SystemExit(f"train: {name}: nothing to train on (no kept rows of {', '.join(teachers)})")
    return {"set_key": set_key, "data": data, "manifest": manifest}


def plan_run(t: TrainConfig, root: Path, name: str | None, teachers: list[str], version: int | None,
             the_set: dict, folder: str | None = None) -> dict:
    """The training run of `the_set` with `t`'s recipe: its worker spec (`spec`) and `students` row (`row`).
    name None: the student is named by its key (x-<train key>), so equal runs are one student; folder: where
    under `root` the run goes (default: the name)."""
    recipe = {k: v for k, v in dataclasses.asdict(t).items() if k not in NOT_RECIPE}
    train_key = stable_id(the_set["set_key"], model_fingerprint(t.student), canonical_json(recipe))
    name = name or f"x-{train_key[:12]}"
    out = root / (folder or name) / f"run-{train_key}"
    out.mkdir(parents=True, exist_ok=True)
    spec = {**dataclasses.asdict(t), "student": str(Path(t.student).resolve()),
            "data": str(the_set["data"] / "train.arrow"), "out_dir": str(out)}
    return {"spec": spec, "row": {
        "student": name, "teachers": list(teachers), "sft_version": None if version is None else int(version),
        "set_key": the_set["set_key"], "train_key": train_key, "base_model": str(Path(t.student).resolve()),
        "model_path": str(out / "model"), "samples": int(the_set["manifest"]["samples"])}}


def trained(plan: dict) -> bool:
    return (Path(plan["spec"]["out_dir"]) / "model" / "config.json").is_file()


def train_all(spark, cfg, rec, planned: list[dict]) -> int:
    """Train every planned run that has no model yet, in one launch; record metrics and students. Returns how
    many were trained."""
    recorded = {n: (r["train_key"], r["model_path"]) for n, r in rows_by_key(spark, cfg, "students").items()}
    todo = [p for p in planned if not trained(p)]
    for p in planned:
        if p not in todo:
            print(f"train: {p['row']['student']}: {p['spec']['out_dir']}/model is already trained; nothing to do")
    results = {}
    if todo:
        from distill.training.launch import launch

        with rec.step("train"):  # every student in one launch: starting the workers is paid once
            results = dict(zip([p["row"]["student"] for p in todo], launch(spark, [p["spec"] for p in todo]),
                               strict=True))
    steps, changed = [], []
    for p in planned:
        row = p["row"]
        steps += _record(rec, row["student"], Path(p["spec"]["out_dir"]), row["train_key"],
                         results.get(row["student"], {"start_step": None}))
        print(f"train: {row['student']}: the trained student is {row['model_path']}")
        if recorded.get(row["student"]) != (row["train_key"], row["model_path"]):
            changed.append(row)
    ensure_table(spark, cfg, "train_metrics")
    if steps:  # steps already there are kept
        df = spark.createDataFrame(steps).withColumn("run_id", F.lit(rec.run_id))
        rec.wrote("train_metrics", merge_new(spark, cfg, "train_metrics", df)["version"])
    if changed:
        df = spark.createDataFrame(changed, STUDENT_ROW).withColumn("run_id", F.lit(rec.run_id)).withColumn(
            "trained_at", F.current_timestamp())
        rec.wrote("students", merge_upsert(spark, cfg, "students", df)["version"])
    return len(todo)


def _pack(rows, n: int, t: TrainConfig, teachers, version, data: Path) -> None:
    """Write the packed set (Parquet from Spark, then one memory-mappable Arrow file) and its manifest, aside
    and renamed into place."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

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
