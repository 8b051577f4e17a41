"""distill.worker_daemon: Spark's Python worker daemon without a full garbage collection and a re-read of
the path's archives per task."""

from __future__ import annotations

import gc
import weakref
import zipfile

from distill import worker_daemon


def _zip(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.py", "")
    return str(path)


def _package(folder, name):
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "__init__.py").write_text("")


def test_the_jar_and_the_installed_pysparks_own_zips_are_dropped_and_nothing_else(tmp_path):
    site = tmp_path / "site-packages"
    _package(site, "pyspark")
    _package(site, "py4j")
    lib = site / "pyspark" / "python" / "lib"
    own = [_zip(lib / "pyspark.zip"), _zip(lib / "py4j-0.10.9.9-src.zip")]
    jar = _zip(site / "pyspark" / "jars" / "spark-core_2.13-4.1.1.jar")
    user = _zip(tmp_path / "userFiles" / "deps.zip")  # a --py-files zip: the code a task needs
    elsewhere = _zip(tmp_path / "spark-home" / "python" / "lib" / "pyspark.zip")  # another Spark's copy
    path = [str(tmp_path), *own, jar, user, elsewhere, str(tmp_path / "missing.zip"), str(site)]
    assert worker_daemon.redundant(path) == [*own, jar]


def test_the_zips_stay_where_pyspark_is_not_installed(tmp_path):
    site = tmp_path / "site-packages"
    site.mkdir()
    lib = tmp_path / "spark" / "python" / "lib"
    zips = [_zip(lib / "pyspark.zip"), _zip(lib / "py4j-0.10.9.9-src.zip")]
    jar = _zip(tmp_path / "spark" / "jars" / "spark-core_2.13-4.1.1.jar")
    assert worker_daemon.redundant([*zips, jar, str(site)]) == [jar]
    # pyspark installed but py4j not: py4j's zip is still needed, so neither zip goes
    _package(site, "pyspark")
    inside = [_zip(site / "pyspark" / "python" / "lib" / "pyspark.zip"),
              _zip(site / "pyspark" / "python" / "lib" / "py4j-0.10.9.9-src.zip")]
    assert worker_daemon.redundant([*inside, str(site)]) == []


class _Cycle:
    def __init__(self):
        self.me = self


def test_a_tasks_survivors_are_frozen_and_collected_whole_every_fiftieth_task():
    kept = []

    def task(infile, outfile):
        if infile == "make":
            kept.append(_Cycle())
        if infile == "garbage":
            _Cycle()  # a cycle that dies with the task: collected before the freeze

    main = worker_daemon.settle_after(task)
    try:
        main("make", None)
        assert gc.get_freeze_count() > 0
        survivor = weakref.ref(kept[0])
        kept.clear()  # dropped after it was frozen: only a full collection finds it
        main("garbage", None)
        assert survivor() is not None
        assert not [o for o in gc.get_objects() if type(o) is _Cycle]  # no unfrozen cycle is left
        for _ in range(worker_daemon.FULL_COLLECT_EVERY - 3):
            main(None, None)
        assert survivor() is not None
        main(None, None)  # the fiftieth task
        assert survivor() is None
    finally:
        gc.unfreeze()


def test_a_model_a_cache_drops_is_collected_after_that_task():
    cache = {}

    def task(infile, outfile):
        if infile == "load":
            cache["model"] = _Cycle()
        if infile == "replace":
            cache.clear()  # as distill.engines and the score stage do
            worker_daemon.model_dropped()

    main = worker_daemon.settle_after(task)
    try:
        main("load", None)
        dropped = weakref.ref(cache["model"])
        main("replace", None)
        assert dropped() is None
    finally:
        gc.unfreeze()


def test_the_sessions_python_workers_run_this_daemon(spark):
    """The session's settings choose the daemon: a task's worker has no jar on its path, imports pyspark from
    the environment, and holds frozen survivors once it has run a task."""
    import pandas as pd
    import pyspark

    def look(batches):
        import gc
        import os
        import sys

        import pyspark as worker_pyspark

        for _ in batches:
            pass
        archives = [p for p in sys.path if p.endswith((".jar", ".zip")) and "pyspark" in p]
        yield pd.DataFrame({"pid": [os.getpid()], "archives": [archives], "pyspark": [worker_pyspark.__file__],
                            "frozen": [gc.get_freeze_count()]})

    one = spark.range(1).repartition(1)
    schema = "pid long, archives array<string>, pyspark string, frozen long"
    # One task at a time: each goes to an idle worker of the pool (earlier tests' workers too, which one is
    # not fixed), so within a few runs a worker runs its second task.
    runs = [one.mapInPandas(look, schema).collect()[0] for _ in range(8)]
    assert all(r.archives == [] and r.pyspark == pyspark.__file__ for r in runs)
    again = [r for i, r in enumerate(runs) if r.pid in {s.pid for s in runs[:i]}]
    assert again, [r.pid for r in runs]
    assert all(r.frozen > 0 for r in again)  # what its earlier task left alive is frozen


def test_only_a_local_session_chooses_it(tmp_path):
    """An executor starts the daemon before a task adds the code zip, so a cluster session leaves Spark's own
    daemon unless its config names this one."""
    from distill.spark import default_settings

    from tests.conftest import make_config

    daemon, ours, cluster = "spark.python.daemon.module", "distill.worker_daemon", "spark.master=spark://head:7077"
    assert default_settings(make_config(tmp_path))[daemon] == ours
    assert daemon not in default_settings(make_config(tmp_path, cluster))
    assert default_settings(make_config(tmp_path, cluster, f"spark.conf.{daemon}={ours}"))[daemon] == ours
