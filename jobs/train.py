"""train: fine-tune the students on the curated `sft` rows, with Horovod (or FSDP through TorchDistributor).

Every student of `train.students` (one per teacher in the paper; without the list, one student `train.name`
on `train.teachers`) starts from the same base model `train.student` and gets the same recipe. Its rows are
the kept rows of its teachers in the `sft` version the last curate run recorded (or `train.sft_version`);
distill.students packs them into a set, trains every student not trained yet in one launch, and records
`train_metrics`, `runs` and `students` (where `evaluate` finds a student by name). Layout under train.root
(default <output_dir>/train) and keys: distill.students.
"""

from __future__ import annotations

from distill import students as sts
from distill.runs import curated_version
from distill.stages import train as st
from distill.tables import table_path

HELP = "fine-tune the student on the curated data (packing, Horovod or FSDP, checkpoints, resume)"


def add_arguments(parser) -> None:
    pass


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    t = cfg.train
    root = sts.train_root(cfg, t)
    if not DeltaTable.isDeltaTable(spark, table_path(cfg, "sft")):
        raise SystemExit("train: no `sft` table yet; run score and curate first")
    version = t.sft_version if t.sft_version is not None else curated_version(spark, cfg, "train")[0]
    sft = spark.read.format("delta").option("versionAsOf", version).load(table_path(cfg, "sft"))
    students = [(s.name, s.teachers) for s in t.students] or [
        (t.name, t.teachers or sorted(r["teacher"] for r in sft.select("teacher").distinct().collect()))]
    planned = []
    for name, teachers in students:
        the_set = sts.build_set(spark, cfg, rec, t, st.training_rows(sft, teachers), root, name, teachers, version)
        planned.append(sts.plan_run(t, root, name, teachers, version, the_set))
    sts.train_all(spark, cfg, rec, planned)
