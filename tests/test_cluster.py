"""Cluster mode: the embedded-default pipeline runs through `submit.sh` against a Spark standalone master with
two workers on 127.0.0.1 (from the pyspark install), and every table it writes holds what a local-mode run of
the same pipeline writes (the session's shared `sample_run`).

It stops after `train` (`--until train`): `evaluate` runs the students on the executors the way `generate`
runs the teachers (same engines, same verifiers), and `report` runs on the driver alone, so the two steps
would add minutes and prove nothing new about a cluster."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.pipeline import steps
from tests.conftest import ROOT, free_port, run_subprocess

pytestmark = pytest.mark.slow

WORKERS = 2


def spark_class() -> str:
    from pyspark.find_spark_home import _find_spark_home

    return str(Path(_find_spark_home()) / "bin" / "spark-class")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_for(url: str, predicate, timeout: float = 120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            state = get_json(url)
            if predicate(state):
                return state
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not reach the expected state in {timeout}s")


def alive(state: dict) -> int:
    return sum(w.get("state") == "ALIVE" for w in state.get("workers", []))


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    """A master and two workers (one core each: this suite runs on small machines), each worker with its own
    work folder so the test can see which executors ran where."""
    work = tmp_path_factory.mktemp("standalone")
    port, ui = free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(work)}
    url = f"spark://127.0.0.1:{port}"
    logs, procs, worker_uis = [], [], []
    try:
        logs.append(open(work / "master.log", "w"))
        procs.append(subprocess.Popen(
            [spark_class(), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(ui)], stdout=logs[-1], stderr=subprocess.STDOUT, env=env, start_new_session=True))
        for i in range(WORKERS):
            worker_uis.append(free_port())
            logs.append(open(work / f"worker{i}.log", "w"))
            procs.append(subprocess.Popen(
                [spark_class(), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "1",
                 "--memory", "3g", "--webui-port", str(worker_uis[-1]), "--work-dir", str(work / f"work{i}")],
                stdout=logs[-1], stderr=subprocess.STDOUT, env=env, start_new_session=True))
        wait_for(f"http://127.0.0.1:{ui}/json/", lambda s: alive(s) == WORKERS)
        yield {"url": url, "ui": ui, "worker_uis": worker_uis, "work": [work / f"work{i}" for i in range(WORKERS)]}
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for f in logs:
            f.close()


# Columns that say when, how long or in which run, not what: they differ between any two runs.
VOLATILE = {"run_id", "ingest_run_id", "ingested_at", "prepared_at", "quarantined_at", "generated_at",
            "verified_at", "added_at", "scored_at", "curated_at", "gen_seconds", "verify_seconds",
            "engine_s_per_accepted", "trained_at", "evaluated_at", "model_path"}

COMPARED = {
    "queries": ["query_id", "source_id", "category", "content_hash", "status", "drop_reason", "signals"],
    "quarantine": None,
    "decontam_matches": ["query_id", "benchmark", "item_id", "method", "similarity"],
    "attempts": ["query_id", "teacher", "attempt", "response", "finish_reason", "tokens_out", "verify_status",
                 "verify_score", "verifier", "accepted"],
    "sft": ["query_id", "teacher", "attempt", "keep", "reject_reason", "n_tokens", "structure_ok",
            "structure_reason", "ngram_max_repeat", "ngram_corpus_max", "ppl", "ppl_tokens"],
    "students": None,
}
UNTIL = "train"


def table_rows(spark, warehouse: Path, table: str, columns) -> list[tuple]:
    df = spark.read.format("delta").load(str(warehouse / table))
    columns = columns or [c for c in df.columns if c not in VOLATILE]
    def cell(v):
        if isinstance(v, dict):
            return sorted(v.items())
        # report figures are sums over partitions that local and cluster mode add in another order
        return float(f"{v:.10g}") if isinstance(v, float) else v

    rows = [tuple(cell(v) for v in r) for r in df.select(*columns).collect()]
    return sorted(rows, key=repr)


def test_pipeline_on_a_two_worker_standalone_cluster_matches_local_mode(standalone, sample_run, spark, tmp_path):
    # One reference model for both runs: the local run built it (score.perplexity.build_tiny_from), the
    # cluster run finds it and scores, and trains, with the very same weights.
    local_wh, local_out = sample_run.warehouse, sample_run.out
    cluster_wh, cluster_out = tmp_path / "warehouse", tmp_path / "out"
    memory = ["--set", "spark.conf.spark.executor.memory=2g", "--set", "spark.conf.spark.driver.memory=2g"]
    done = run_subprocess([str(ROOT / "submit.sh"), "--master", standalone["url"], "--until", UNTIL,
                           *sample_run.sets(tmp_path), *memory], timeout=1800)  # a busy machine is slow
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"

    # the application ran on the cluster, with an executor on each worker that ran tasks
    state = wait_for(f"http://127.0.0.1:{standalone['ui']}/json/", lambda s: s.get("completedapps"))
    (app,) = state["completedapps"]
    assert app["name"] == "distill-local" and app["cores"] == WORKERS, app
    for work in standalone["work"]:
        logs = list((work / app["id"]).glob("*/stderr"))
        assert logs and any("Running task" in p.read_text(errors="replace") for p in logs), (work, logs)
    masters = spark.read.format("delta").load(str(cluster_wh / "runs")).select("job", "status", "spark_master")
    assert sorted(masters.collect()) == sorted([(job, "succeeded", standalone["url"])
                                                for job in ("pipeline", *steps(UNTIL))])

    # table by table, row by row
    for table, columns in COMPARED.items():
        local, cluster = (table_rows(spark, wh, table, columns) for wh in (local_wh, cluster_wh))
        assert len(local) == len(cluster), (table, len(local), len(cluster))
        diff = [(a, b) for a, b in zip(local, cluster, strict=True) if a != b]
        assert not diff, (table, len(diff), diff[:3])
    assert table_rows(spark, local_wh, "sft", ["keep"]).count((True,)) > 0
    assert not (cluster_wh / "eval_samples").exists() and not (cluster_wh / "report_costs").exists()

    # the exported datasets: same manifests (but paths, run ids and times), same rows
    for teacher in ("teacher-a", "teacher-b", "teacher-c"):
        manifests, lines = [], []
        for o in (local_out, cluster_out):
            manifests.append(json.loads((o / "export" / teacher / "manifest.json").read_text()))
            lines.append(sorted(line for f in manifests[-1]["files"]["jsonl"]
                                for line in (o / "export" / teacher / f).read_text().splitlines()))
        figures = [{k: m[k] for k in ("rows", "by_category", "columns", "sft_version")} for m in manifests]
        assert figures[0] == figures[1] and figures[0]["rows"] > 0, figures
        assert lines[0] == lines[1] and len(lines[0]) == figures[0]["rows"]

    # training: the same packed set, the same number of steps, the same losses
    counts = []
    for wh in (local_wh, cluster_wh):
        (row,) = spark.read.format("delta").load(str(wh / "runs")).where("job = 'train'").collect()
        counts.append({k: v for k, v in row["counts"].items() if k.startswith("train.")})
    assert counts[0] == counts[1] and counts[0]["train.steps"] == counts[0]["train.steps_run"] > 0, counts
    losses = [sorted((r["step"], r["loss"], r["tokens"]) for r in spark.read.format("delta").load(
        str(wh / "train_metrics")).collect()) for wh in (local_wh, cluster_wh)]
    assert [s[::2] for s in losses[0]] == [s[::2] for s in losses[1]]
    assert all(math.isclose(a[1], b[1], rel_tol=1e-5) for a, b in zip(*losses, strict=True)), losses
    for out in (local_out, cluster_out):
        for student in ("tiny-a", "tiny-b", "tiny-c"):
            (model,) = (out / "train" / student).glob("run-*/model")
            assert (model / "config.json").is_file()

