"""Spark's Python worker daemon (`pyspark.daemon`, chosen by `spark.python.daemon.module`) without two fixed
costs that Spark charges every Python task. Both grow with what a worker has imported. Ours import torch,
transformers and sympy, so on a small machine the two together cost about a third of a second per task.

1. The garbage collector. After every task, a reused worker runs a full `gc.collect()`. That walks every
   object the worker holds: some 500,000 once torch and transformers are imported, 0.25 s. Here each task
   is followed by a collection and then `gc.freeze()`, which moves what survived (imported modules, the
   models in the workers' caches) out of the collector's sight. The daemon's own collection then only walks
   what the next task made. Garbage that was alive when it was frozen is freed by reference counting, but a
   reference cycle in it only by a collection that sees it again: so the caches that drop a model call
   `model_dropped()`, which unfreezes everything for the next collection, and every FULL_COLLECT_EVERY tasks
   everything is unfrozen and collected whole anyway.

2. The archives on the path. Spark puts `SPARK_HOME/python/lib/pyspark.zip`, py4j's zip and the spark-core
   jar at the head of the workers' PYTHONPATH. Each Python task calls `importlib.invalidate_caches()`
   (pyspark.worker_util.setup_spark_files), and on Python 3.11 every zip on the path then reads its whole
   directory again: the spark-core jar has some 5,000 entries and pyspark.zip 1,300, about 90 ms per task.
   The zips also hold only sources, so each worker compiles the pyspark modules it imports. With pyspark
   installed in the environment (a pip install, where SPARK_HOME is the pyspark package itself), they are
   that install's own copies, and the jar holds no Python at all. So the daemon drops the jar, and drops
   pyspark's and py4j's zips when they lie inside the installed pyspark package and py4j is installed too.
   On a cluster whose executors have no pyspark installed, the zips stay and nothing changes.

PYTHONPATH itself is left as it is: a process that a task starts (a sandbox, Horovod's workers) sees Spark's
path as it would without this module.
"""

from __future__ import annotations

import gc
import os
import runpy
import sys

FULL_COLLECT_EVERY = 50  # tasks; a full collection costs ~0.25 s, so ~5 ms a task


def _archive(entry: str) -> bool:
    return entry.endswith((".zip", ".jar", ".egg")) and os.path.isfile(entry)


def _installed(package: str, path: list[str]) -> str | None:
    """The folder of `package` when it is found on `path` outside archives, else None."""
    for entry in path:
        if entry and not _archive(entry) and os.path.isfile(os.path.join(entry, package, "__init__.py")):
            return os.path.abspath(os.path.join(entry, package))
    return None


def redundant(path: list[str]) -> list[str]:
    """The entries of `path` that the workers do not need: jars, and pyspark's and py4j's zips that lie
    inside the pyspark package installed outside an archive (its own copies, so the same version)."""
    pyspark = _installed("pyspark", path)
    inside = pyspark is not None and _installed("py4j", path) is not None
    drop = []
    for entry in filter(_archive, path):
        name = os.path.basename(entry)
        if entry.endswith(".jar") or (inside and (name == "pyspark.zip" or name.startswith("py4j-"))
                                      and os.path.abspath(entry).startswith(pyspark + os.sep)):
            drop.append(entry)
    return drop


def settle_after(worker_main):
    """`worker_main` (pyspark.worker.main, one task) followed by a collection and a freeze, or by a full
    collection every FULL_COLLECT_EVERY tasks."""
    tasks = 0

    def main(infile, outfile):
        nonlocal tasks
        try:
            return worker_main(infile, outfile)
        finally:
            tasks += 1
            if tasks % FULL_COLLECT_EVERY == 0:
                gc.unfreeze()
            gc.collect()
            gc.freeze()

    return main


def model_dropped() -> None:
    """A worker's cache let go of a model (or an engine): let the collection after this task walk everything
    again, so that the model is freed now even if it holds a reference cycle. Harmless outside a worker."""
    gc.unfreeze()


def main() -> None:
    drop = set(redundant(sys.path))
    sys.path[:] = [p for p in sys.path if p not in drop]
    for entry in drop:
        sys.path_importer_cache.pop(entry, None)
    import pyspark.worker

    # pyspark.daemon takes `main` from pyspark.worker when it starts, in the daemon; it forks the workers,
    # which inherit the wrapped function and the cleaned path.
    pyspark.worker.main = settle_after(pyspark.worker.main)
    runpy.run_module("pyspark.daemon", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
