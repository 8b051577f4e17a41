"""Start `loop.train` on `num_proc` workers from a Spark driver.

- horovod: `horovod.spark.run` runs one Horovod process per Spark task (gloo rendezvous through the driver),
  so the same command works in local mode and on a cluster's executors.
- torch_distributor: `pyspark.ml.torch.distributor.TorchDistributor` runs torchrun, on the driver in local
  mode (`local[N]`) and as barrier tasks on the executors otherwise.
"""

from __future__ import annotations

import os
import sys


def run_worker(spec: dict) -> dict:
    """The function each worker runs (importable, so cloudpickle ships a reference, not the code)."""
    from distill.training.loop import train

    return train(spec)


def launch(spark, spec: dict) -> dict:
    """Run training; returns rank 0's result."""
    if spec["launcher"] == "horovod":
        import horovod.spark

        results = horovod.spark.run(run_worker, args=(spec,), num_proc=spec["num_proc"], use_gloo=True,
                                    verbose=0, executable=sys.executable, stdout=sys.stdout, stderr=sys.stderr,
                                    env=_worker_env(spark))
        return results[0]
    from pyspark.ml.torch.distributor import TorchDistributor

    local = spark.sparkContext.master.startswith("local")
    return TorchDistributor(num_processes=spec["num_proc"], local_mode=local, use_gpu=spec["use_gpu"]).run(
        run_worker, spec)


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
