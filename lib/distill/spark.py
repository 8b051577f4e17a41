"""The one Spark session factory.

Settings are layered, lowest first:
  1. built-in defaults for a single machine (local[*], Delta on, warehouse, the venv's python for workers);
  2. the config's `spark.conf` (and `spark.master`);
  3. whatever spark-submit was given (`--master spark://...`, `--conf`, spark-defaults.conf).
So a cluster run is the same code with spark-submit's settings on top.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path
from typing import Callable, TypeVar

from distill.config import Config
from distill.jvm import driver_java_options

T = TypeVar("T")

DELTA_SETTINGS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def delta_jars() -> list[str]:
    """The Delta jars bootstrap placed in the environment (DISTILL_JARS_DIR overrides)."""
    folder = os.environ.get("DISTILL_JARS_DIR") or str(Path(sys.prefix) / "share" / "distill" / "jars")
    jars = sorted(glob.glob(os.path.join(folder, "*.jar")))
    if not any("delta-spark" in os.path.basename(j) for j in jars):
        raise RuntimeError(f"no Delta jars in {folder}: run scripts/bootstrap.sh (or set DISTILL_JARS_DIR)")
    return jars


def resolve_path(path: str) -> str:
    """Absolute form of a local path; URIs (s3a://, hdfs://, file:/...) are left as they are."""
    if "://" in path or path.startswith("file:"):
        return path
    return str(Path(path).expanduser().resolve())


def launched_by_spark_submit() -> bool:
    # spark-submit starts the JVM first and tells the Python driver where its gateway is.
    return "PYSPARK_GATEWAY_PORT" in os.environ


# A local driver on two cores or fewer is also the executor, so the JVM's own threads take CPU from the tasks:
# - the serial garbage collector: the JVM picks G1 from two cores up, whose concurrent threads and write
#   barriers cost the sample run 10% of its CPU;
# - cheaper JIT compilations (no escape analysis, shallower inlining): the compiler threads used a quarter of
#   the sample run's CPU (54 of 210 s, 42 of them C2's), compiling Spark's and Delta's code for tables of a few
#   hundred rows; with these, the run takes about 4% less CPU.
SMALL_MACHINE_JVM = ["-XX:+UseSerialGC", "-XX:-DoEscapeAnalysis", "-XX:MaxInlineLevel=9", "-XX:InlineSmallCode=1000"]


def default_settings(cfg: Config) -> dict[str, str]:
    python = os.environ.get("PYSPARK_PYTHON", sys.executable)
    settings = {
        "spark.master": cfg.spark.master,
        "spark.app.name": cfg.spark.app_name,
        **DELTA_SETTINGS,
        "spark.sql.warehouse.dir": resolve_path(cfg.warehouse) + "/_catalog",
        # Workers must run the project's interpreter, or they cannot import pandas, torch, distill.
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        # Reused Python workers keep their module-level model caches between tasks.
        "spark.python.worker.reuse": "true",
        "spark.driver.memory": "4g",
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Spark draws its stage bars (`[Stage 51:> (0 + 2) / 2]`) on stderr: useful on a terminal, noise in a
        # log file between our progress lines. submit.sh asks this with the terminal's stderr inherited.
        "spark.ui.showConsoleProgress": "true" if sys.stderr.isatty() else "false",
        "spark.sql.debug.maxToStringFields": "200",
        # Libraries inside tasks (FlagEmbedding, transformers) draw per-batch progress bars: noise in job logs.
        "spark.executorEnv.TQDM_DISABLE": "1",
        "spark.jars": ",".join(delta_jars()),
        # Delta's change data feed on new tables: downstream jobs can read what changed.
        "spark.databricks.delta.properties.defaults.enableChangeDataFeed": "true",
        # Where the JVM's time zone is not UTC, Delta re-derives every commit's file list from the log to check
        # the copy it keeps in the .crc file: a Spark job more per commit. Delta reads that copy only to make the
        # next commit's copy, never to plan a query, so the check guards nothing this project relies on.
        "spark.databricks.delta.allFilesInCrc.verificationMode.forceOnNonUTC.enabled": "false",
    }
    local = cfg.spark.master.startswith("local")
    if local:
        # Spark's Python daemon without two costs it charges every task: a full garbage collection and a re-read
        # of the archives on the path (about 0.3 s a task here; distill.worker_daemon). Local mode only: it
        # starts before a task has the code zip (--py-files), so an executor must have the project installed
        # (then set it in the config's spark.conf).
        settings["spark.python.daemon.module"] = "distill.worker_daemon"
    # The class archive bootstrap made (a faster driver start), and on a machine of two cores or fewer, where
    # local mode's driver is also the executor, SMALL_MACHINE_JVM.
    small = local and (os.cpu_count() or 1) <= 2
    java = [*(SMALL_MACHINE_JVM if small else []), driver_java_options()]
    if jvm_options := " ".join(o for o in java if o):
        settings["spark.driver.extraJavaOptions"] = jvm_options
    settings.update({k: _spark_value(v) for k, v in cfg.spark.conf.items()})
    return settings


def _spark_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def get_spark(cfg: Config, extra: dict[str, str] | None = None):
    """Start (or return) the session for `cfg`; `extra` settings go on top of the config's (serve's plugin)."""
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    settings = {**default_settings(cfg), **(extra or {})}
    # pyspark takes the workers' interpreter from this variable, not from spark.pyspark.python.
    os.environ.setdefault("PYSPARK_PYTHON", settings.get("spark.pyspark.python", sys.executable))
    # pandas-on-Spark (used by pyspark.testing) wants this set before the JVM starts.
    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    if settings.get("spark.master", "").startswith("local"):
        # Local mode talks only to itself: bind to loopback rather than guess a network address.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if launched_by_spark_submit():
        # The JVM is up with spark-submit's settings; fill in only what it was not given.
        SparkContext._ensure_initialized()
        given = SparkConf()
        settings = {k: v for k, v in settings.items() if not given.contains(k)}
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("DISTILL_SPARK_LOG_LEVEL", "WARN"))
    quiet_query_loggers()
    return spark


def quiet_query_loggers() -> None:
    """pyspark logs every failed DataFrame call or SQL query as a multi-kilobyte JSON record (on stdout under
    spark-submit); the CLI reports the error itself."""
    import logging

    for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def side_by_side(spark, calls: list[Callable[[], T]], at_once: int = 4) -> list[T]:
    """Run independent driver-side calls (each with its own Spark jobs and Delta commits, e.g. writes to
    different tables) in threads, and return their results in order. Writing a small table is mostly the
    driver planning and waiting between a few tiny Spark jobs, one after another, so a few in flight at once
    keep the cores busy. A call's error is raised once the others have ended. Each thread inherits the
    caller's Spark local properties (job group, description) and the session's tags."""
    from concurrent.futures import ThreadPoolExecutor

    from pyspark import inheritable_thread_target

    with ThreadPoolExecutor(min(at_once, max(1, len(calls)))) as pool:
        futures = [pool.submit(inheritable_thread_target(spark)(call)) for call in calls]
    return [f.result() for f in futures]


def remove_path(spark, path: str) -> None:
    """Delete a folder through Hadoop's FileSystem (local paths and s3a://, hdfs://, … alike)."""
    fs, hpath = _fs(spark, path)
    fs.delete(hpath, True)


def cores_per_task(spark) -> int:
    """CPU threads one task may use (torch threads, verifier processes) without oversubscribing the cores:
    cores / concurrent tasks in local mode, spark.task.cpus on a cluster."""
    if spark.sparkContext.master.startswith("local"):
        return max(1, (os.cpu_count() or 1) // max(1, spark.sparkContext.defaultParallelism))
    return int(spark.conf.get("spark.task.cpus", "1"))


def _fs(spark, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def replace_path(spark, src: str, dst: str) -> None:
    """Put folder `src` at `dst`, replacing what was there (a finished output appears in one rename)."""
    fs, hdst = _fs(spark, dst)
    _, hsrc = _fs(spark, src)
    fs.delete(hdst, True)
    fs.mkdirs(hdst.getParent())
    if not fs.rename(hsrc, hdst):
        raise OSError(f"could not move {src} to {dst}")


def write_text(spark, path: str, text: str) -> None:
    """Write a small text file through Hadoop's FileSystem (local paths and URIs alike)."""
    fs, hpath = _fs(spark, path)
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def read_text(spark, path: str) -> str | None:
    """A small text file's content through Hadoop's FileSystem; None when there is no such file."""
    fs, hpath = _fs(spark, path)
    if not fs.exists(hpath):
        return None
    jvm = spark.sparkContext._jvm
    stream = fs.open(hpath)
    try:
        return jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def exists(spark, path: str) -> bool:
    fs, hpath = _fs(spark, path)
    return bool(fs.exists(hpath))


def list_files(spark, folder: str, suffix: str) -> list[str]:
    """Names of the files in `folder` that end with `suffix`, sorted."""
    fs, hpath = _fs(spark, folder)
    return sorted(s.getPath().getName() for s in fs.listStatus(hpath) if s.getPath().getName().endswith(suffix))


def children_older_than(spark, path: str, age_s: float) -> list[str]:
    """The entries of folder `path` last modified more than `age_s` seconds ago (none if it does not exist)."""
    import time

    fs, hpath = _fs(spark, path)
    if not fs.exists(hpath):
        return []
    cutoff_ms = (time.time() - age_s) * 1000
    return [s.getPath().toString() for s in fs.listStatus(hpath) if s.getModificationTime() < cutoff_ms]
