"""Record every job run in the `runs` table: resolved config, code version, counts, timings.

    with RunRecorder(spark, cfg, "ingest") as run:
        with run.step("parse"):
            ...
        run.count("inserted", n)

A failed job is recorded too (status=failed, with the error) and the exception goes on up. While a run is
open, every Delta commit of the session carries its run id (commitInfo.userMetadata), so `DESCRIBE HISTORY`
tells whose commit each version is and runs.table_versions names the run's own commits.
"""

from __future__ import annotations

import subprocess
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import distill
from distill.config import Config
from distill.ids import stable_id


def git_sha() -> str | None:
    """The code's commit, with '+dirty' when the work tree has changes; None outside a checkout."""
    here = Path(distill.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


class RunRecorder:
    def __init__(self, spark, cfg: Config, job: str):
        self.spark, self.cfg, self.job = spark, cfg, job
        self.run_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{job}-{uuid.uuid4().hex[:8]}"
        self.counts: dict[str, int] = {}
        self.timings: dict[str, float] = {}
        self.table_versions: dict[str, int] = {}
        self.settled_key: str | None = None  # set by distill.settled when the run leaves nothing to do

    def count(self, name: str, value: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(value)

    def wrote(self, table: str, version: int) -> None:
        self.table_versions[table] = int(version)

    @contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.timings[name] = round(self.timings.get(name, 0.0) + took, 3)
            print(f"distill: {self.job}: {name} done in {took:.1f} s", flush=True)

    def progress(self, stage: str, done: int, total: int, extra: str = "") -> None:
        """One line a person can follow: rows done out of the total for a stage of this job."""
        share = f" ({100 * done / total:.0f}%)" if total else ""
        print(f"distill: {self.job}: {stage}: {done:,} of {total:,}{share}{extra}", flush=True)

    # seconds between progress lines while a watched stage runs
    progress_every = 15.0

    @contextmanager
    def watch(self, stage: str, total: int):
        """Yield a Spark accumulator that a stage's tasks add their finished rows to, and print rows done out
        of `total` every `progress_every` seconds (with the running Spark stages' tasks done) until the block
        ends, then once more. Spark merges a task's additions when the task ends, so the count moves task by
        task; a retried task may count twice, so it is capped at the total."""
        sc = self.spark.sparkContext
        counter = sc.accumulator(0)
        stop = threading.Event()

        def tasks() -> str:
            st = sc.statusTracker()
            infos = [i for i in (st.getStageInfo(s) for s in st.getActiveStageIds()) if i is not None]
            if not infos:
                return ""
            return (f"; Spark tasks {sum(i.numCompletedTasks for i in infos):,} of "
                    f"{sum(i.numTasks for i in infos):,} done")

        def report() -> None:
            while not stop.wait(self.progress_every):
                self.progress(stage, min(counter.value, total), total, tasks())

        thread = threading.Thread(target=report, name=f"progress-{stage}", daemon=True)
        thread.start()
        try:
            yield counter
        finally:
            stop.set()
            thread.join()
        self.progress(stage, min(counter.value, total), total)

    def __enter__(self):
        from distill import tables

        self._conflicts_before = tables.conflict_retries
        # every commit this run makes carries its run id: last_operation finds the run's own versions by it
        self._tag_before = self.spark.conf.get(tables.RUN_TAG, None)
        self.spark.conf.set(tables.RUN_TAG, self.run_id)
        self.started = datetime.now(timezone.utc)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb):
        from distill import tables

        error = None
        if exc is not None:
            error = "".join(traceback.format_exception_only(exc_type, exc)).strip()[:4000]
        try:
            self._write("failed" if exc is not None else "succeeded", error)
        finally:
            if self._tag_before is None:
                self.spark.conf.unset(tables.RUN_TAG)
            else:
                self.spark.conf.set(tables.RUN_TAG, self._tag_before)
        return False

    def _write(self, status: str, error: str | None) -> None:
        from distill import tables
        from distill.tables import TABLES, append_new

        if tables.conflict_retries > self._conflicts_before:  # writes redone after another job's commit
            self.counts["conflict_retries"] = tables.conflict_retries - self._conflicts_before
        config = self.cfg.to_json()
        row = {
            "run_id": self.run_id,
            "job": self.job,
            "status": status,
            "started_at": self.started,
            "finished_at": datetime.now(timezone.utc),
            "duration_s": round(time.perf_counter() - self._t0, 3),
            "config": config,
            "config_hash": stable_id(config)[:16],
            "git_sha": git_sha(),
            "distill_version": distill.__version__,
            "spark_master": self.spark.sparkContext.master,
            "counts": self.counts,
            "timings": self.timings,
            "table_versions": self.table_versions,
            "error": error,
            "settled_key": self.settled_key if status == "succeeded" else None,
        }
        append_new(self.spark, self.cfg, "runs", self.spark.createDataFrame([row], TABLES["runs"].ddl))


def curated_version(spark, cfg, job: str = "export") -> tuple[int, str | None, str | None]:
    """(sft version, curate run id, its config hash) of the last successful curate run."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from distill.tables import read_table, table_path

    if DeltaTable.isDeltaTable(spark, table_path(cfg, "runs")):
        row = (read_table(spark, cfg, "runs")
               .where((F.col("job") == "curate") & (F.col("status") == "succeeded")
                      & F.col("table_versions")["sft"].isNotNull())
               .orderBy(F.col("finished_at").desc()).select("run_id", "config_hash", "table_versions").first())
        if row is not None:
            return int(row["table_versions"]["sft"]), row["run_id"], row["config_hash"]
    raise SystemExit(f"{job}: no successful curate run yet; run score and curate first (or give an sft version)")
