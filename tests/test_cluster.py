"""submit.sh against a real Spark standalone cluster on 127.0.0.1 (master + one worker from the
pyspark install): ingest runs on the cluster's executor and the tables hold what local mode gives."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, run_subprocess

pytestmark = pytest.mark.slow


def spark_class() -> str:
    from pyspark.find_spark_home import _find_spark_home

    return str(Path(_find_spark_home()) / "bin" / "spark-class")


def wait_for(url: str, predicate, timeout: float = 90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                state = json.loads(resp.read())
            if predicate(state):
                return state
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not reach the expected state in {timeout}s")


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    work = tmp_path_factory.mktemp("standalone")
    port, ui, worker_ui = free_port(), free_port(), free_port()
    env = {"SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(work), "SPARK_WORKER_DIR": str(work / "work")}
    import os

    env = {**os.environ, **env}
    logs = [open(work / "master.log", "w"), open(work / "worker.log", "w")]
    master = subprocess.Popen([spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], stdout=logs[0], stderr=subprocess.STDOUT,
                              env=env, start_new_session=True)
    url = f"spark://127.0.0.1:{port}"
    worker = subprocess.Popen([spark_class(), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
                               "--cores", "2", "--memory", "2g", "--webui-port", str(worker_ui)],
                              stdout=logs[1], stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{ui}/json/", lambda s: len(s.get("workers", [])) == 1)
        yield url, ui
    finally:
        for proc in (worker, master):
            proc.terminate()
        for proc in (worker, master):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for f in logs:
            f.close()


def test_ingest_through_submit_sh_on_a_standalone_cluster(standalone, tmp_path):
    url, ui = standalone
    src = tmp_path / "q.jsonl"
    rows = [{"id": f"q{i}", "category": "math", "query": f"What is {i} + {i}?", "reference_answer": str(2 * i)}
            for i in range(20)]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    warehouse = tmp_path / "warehouse"
    common = ["--set", f"warehouse={warehouse}", "--set", "spark.conf.spark.ui.enabled=false",
              "--set", "spark.conf.spark.executor.memory=1g", "--set", "spark.conf.spark.driver.memory=1g"]
    done = run_subprocess([str(ROOT / "submit.sh"), "ingest", "--master", url, "--input", str(src), *common])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20 new queries" in done.stdout

    # the application really ran on the cluster, not in local mode
    state = wait_for(f"http://127.0.0.1:{ui}/json/", lambda s: s.get("completedapps"))
    assert state["completedapps"][0]["name"] == "distill-local"

    query = ("SELECT (SELECT count(*) FROM queries) AS queries, (SELECT count(*) FROM quarantine) AS bad, "
             "(SELECT first(spark_master) FROM runs) AS master")
    out = run_subprocess([str(ROOT / "submit.sh"), "sql", query, "--csv", *common])
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["queries,bad,master", f"20,1,{url}"]
