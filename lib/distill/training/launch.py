"""Start `loop.train` on `num_proc` workers from a Spark driver.

- horovod: `horovod.spark.run` runs one Horovod process per Spark task (gloo rendezvous through the driver),
  so the same command works in local mode and on a cluster's executors.
- torch_distributor: `pyspark.ml.torch.distributor.TorchDistributor` runs torchrun, on the driver in local
  mode (`local[N]`) and as barrier tasks on the executors otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

# The settings every run of one launch shares: they decide the workers and their process group.
LAUNCH_KEYS = ("launcher", "num_proc", "use_gpu")


def run_worker(specs: list[dict]) -> list[dict]:
    """The function each worker runs (importable, so cloudpickle ships a reference, not the code): the runs
    in order, in one process group."""
    from distill.training.backends import BACKENDS
    from distill.training.loop import train

    backend = BACKENDS[specs[0]["launcher"]](specs[0]["use_gpu"])
    results = [train(spec, backend) for spec in specs]
    backend.close()
    return results


def launch(spark, specs: list[dict]) -> list[dict]:
    """Run the training runs `specs` one after another in one launch; returns rank 0's results, in order.

    One launch for several runs (train's students): starting the workers (Horovod's task services and
    rendezvous, each process importing torch) costs more than training a small student, and is paid once."""
    if not specs:
        return []
    shared = {k: specs[0][k] for k in LAUNCH_KEYS}
    if any({k: s[k] for k in LAUNCH_KEYS} != shared for s in specs):
        raise ValueError(f"one launch needs the same {', '.join(LAUNCH_KEYS)} for every run")
    if shared["launcher"] == "horovod":
        import horovod.spark

        with _quiet_cancelled_horovod_job():
            results = horovod.spark.run(run_worker, args=(specs,), num_proc=shared["num_proc"], use_gloo=True,
                                        verbose=0, executable=sys.executable, stdout=sys.stdout, stderr=sys.stderr,
                                        env=_worker_env(spark))
        return results[0]
    from pyspark.ml.torch.distributor import TorchDistributor

    local = spark.sparkContext.master.startswith("local")
    return TorchDistributor(num_processes=shared["num_proc"], local_mode=local, use_gpu=shared["use_gpu"]).run(
        run_worker, specs)


@contextlib.contextmanager
def _quiet_cancelled_horovod_job():
    """When a worker fails, horovod.spark.run cancels its Spark job group and raises the failure; the thread
    that waited on that job then dies of the cancellation, and Python would print a second, misleading
    traceback (a cancelled Spark job) beside the real one. Only that thread's cancellation is dropped: run()
    joins the thread before it raises, so the hook is back before anything else can use it."""
    before = threading.excepthook

    def hook(args):
        if "cancelled job group horovod.spark.run" not in str(args.exc_value):
            before(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = before


def _worker_env(spark) -> dict:
    """The driver's environment for the Horovod processes (PYTHONPATH, crash points, thread settings).

    Horovod puts these variables over the executor's own, so PYTHONPATH is the driver's: on a cluster it names
    the driver's copy of the code zip (spark-submit --py-files), which other nodes do not have. Each executor
    keeps its copy in its working folder, where Horovod starts the process: the zips' file names, relative,
    go after the driver's entries."""
    env = dict(os.environ)
    py_files = spark.sparkContext.getConf().get("spark.submit.pyFiles", "")
    shipped = [os.path.basename(p) for p in py_files.split(",") if p]
    if shipped and not spark.sparkContext.master.startswith("local"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in [env.get("PYTHONPATH", ""), *shipped] if p)
    return env
