"""A class-data sharing (CDS) archive for the driver JVM, so that each job and each cold `sql` starts faster.

A Spark driver with Delta loads some 15,000 classes before it answers its first query, and on a small
machine parsing and verifying them is a good part of a job's fixed cost. The JDK can map classes it
archived once instead (`-XX:SharedArchiveFile`, a dynamic archive of JDK 13+). `scripts/bootstrap.sh`
makes the archive with one short local Spark + Delta run (`python -m distill.jvm build`), and every driver
this project starts (`submit.sh`, an in-process session) is given it when it exists.

Safe by construction: the JDK checks that the archive matches its own build and the classpath, and starts
without it (silently: its CDS logging is off) when it does not, e.g. after a JDK upgrade. Executors are
not given it: on a cluster the archive does not exist on the workers' machines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ARCHIVE = Path(sys.prefix) / "share" / "distill" / "jvm" / "spark-classes.jsa"
# A JVM that cannot use the archive says so on stdout (a job's output); it starts the same without it.
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def driver_java_options() -> str:
    """The driver's JVM options for the archive; empty when there is none (no bootstrap, or it failed) or
    DISTILL_JVM_ARCHIVE=off (bench/bench_sql.py compares the two)."""
    if os.environ.get("DISTILL_JVM_ARCHIVE") == "off" or not ARCHIVE.is_file():
        return ""
    return f"-XX:SharedArchiveFile={ARCHIVE} {QUIET}"


def build(archive: Path = ARCHIVE) -> None:
    """Make the archive: one local Spark run of a Delta workload in a subprocess that dumps the classes it
    loaded when its JVM exits. Written aside and renamed, so a failed build leaves no partial archive."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="distill-jvm-") as work:
        env = {**os.environ, "DISTILL_JVM_ARCHIVE_OUT": str(tmp)}
        subprocess.run([sys.executable, "-m", "distill.jvm", "workload", work], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    if not tmp.is_file():
        raise RuntimeError(f"the JVM wrote no archive at {tmp}")
    tmp.replace(archive)


def _workload(work: str) -> None:
    """What a job does, in small: a session with Delta, a table written, merged into, read, aggregated, and
    rows through Python workers (Arrow)."""
    from delta.tables import DeltaTable

    from distill.config import load_config
    from distill.spark import get_spark

    cfg = load_config(None, [f"warehouse={work}/warehouse", "spark.conf.spark.ui.enabled=false"])
    dump = f"-XX:ArchiveClassesAtExit={os.environ['DISTILL_JVM_ARCHIVE_OUT']} {QUIET}"
    spark = get_spark(cfg, {"spark.driver.extraJavaOptions": dump})
    path = f"{work}/warehouse/t"
    spark.range(100).selectExpr("id", "cast(id % 7 as string) k").write.format("delta").save(path)
    updates = spark.createDataFrame([(i, str(i)) for i in range(95, 110)], "id long, k string")
    (DeltaTable.forPath(spark, path).alias("t").merge(updates.alias("u"), "t.id = u.id")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    df = spark.read.format("delta").load(path)
    df.groupBy("k").count().collect()
    df.mapInPandas(lambda frames: (f.assign(id=f.id + 1) for f in frames), df.schema).count()
    DeltaTable.forPath(spark, path).history().collect()
    from pyspark import SparkContext

    jvm = SparkContext._gateway.proc  # the JVM pyspark started; it dumps the archive as it exits
    spark.stop()
    jvm.stdin.close()  # the gateway's cue to exit (it watches its stdin)
    jvm.wait(timeout=300)


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"]:
        build()
        print(f"distill: JVM class archive at {ARCHIVE} ({ARCHIVE.stat().st_size >> 20} MiB)")
    elif sys.argv[1:2] == ["workload"]:
        _workload(sys.argv[2])
    else:
        sys.exit("usage: python -m distill.jvm build")
