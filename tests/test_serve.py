"""`./submit.sh serve` and the warm `sql` path: the same CSV and the same errors as the cold path, no JVM in
the `sql` process, tables made after the server started, and the cold path back once the server stops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
from distill.config import load_config
from distill.serve import STATE, find, publish

from tests.conftest import ROOT, free_port, run_cli, run_subprocess

QUERIES = [
    "SELECT count(*) FROM attempts",
    "SELECT teacher, count(*), sum(CAST(accepted AS INT)) FROM attempts GROUP BY teacher ORDER BY teacher",
    # every kind of cell: strings, booleans, floats, timestamps, maps, arrays and structs
    "SELECT * FROM attempts ORDER BY query_id, teacher, attempt LIMIT 20",
    "SELECT job, status, counts, started_at FROM runs ORDER BY started_at, job",
]
BAD = "SELECT * FROM no_such_table"


def cold(capsys, sets: list[str], query: str) -> tuple[int, str, str]:
    """`distill sql` in this process: its own (the test session's) Spark, never a server."""
    capsys.readouterr()
    rc = run_cli("sql", query, "--csv", *sets)
    out, err = capsys.readouterr()
    return rc, out, err


def submit_sql(sets: list[str], query: str, **kw) -> subprocess.CompletedProcess:
    return run_subprocess([str(ROOT / "submit.sh"), "sql", query, "--csv", *sets], timeout=600, **kw)


def no_java_env(folder) -> dict:
    """An environment in which no JVM can start (a cold `sql` fails in it; a warm one does not need one):
    JAVA_HOME names nothing, and the first `java` on PATH only fails."""
    stub = folder / "java"
    stub.write_text("#!/bin/sh\necho 'no JVM here' >&2\nexit 127\n")
    stub.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "JAVA_HOME": str(folder / "no-such-jdk")}


def test_find_names_only_a_live_server_of_this_warehouse(tmp_path):
    cfg = load_config(None, [f"warehouse={tmp_path / 'wh'}"])
    assert find(cfg) is None  # no state file
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        state = publish(cfg, port)
        assert find(cfg) == f"sc://127.0.0.1:{port}"
        other = load_config(None, [f"warehouse={tmp_path / 'other'}"])
        (tmp_path / "other").mkdir()
        shutil.copy(state, tmp_path / "other" / STATE)
        assert find(other) is None  # a state file copied along with a warehouse names another one
        dead = subprocess.Popen(["true"])
        dead.wait()
        state.write_text(json.dumps({**json.loads(state.read_text()), "pid": dead.pid}))
        assert find(cfg) is None  # its process is gone
        publish(cfg, port)
    assert find(cfg) is None  # nothing listens on the port any more
    state.write_text("{half a fi")
    assert find(cfg) is None


def test_warm_only_without_a_server_exits_75_before_spark_starts(tmp_path, monkeypatch):
    from distill.cli import WARM_MISS

    monkeypatch.setenv("DISTILL_WARM_ONLY", "1")
    # as in `submit.sh sql`'s own process, where no Spark session runs (this test process may hold one)
    monkeypatch.setattr("distill.cli._has_local_session", lambda: False)
    monkeypatch.setattr("distill.spark.get_spark", lambda *a, **k: pytest.fail("started Spark"))
    assert run_cli("sql", "SELECT 1", "--set", f"warehouse={tmp_path}") == WARM_MISS == 75


@pytest.mark.slow
def test_sql_on_a_warm_server_prints_what_the_cold_path_prints(sample_run, capsys, tmp_path):
    home = sample_run.copy(tmp_path, tables=("queries", "attempts", "runs"))
    sets = sample_run.sets(home)
    before = {q: cold(capsys, sets, q) for q in [*QUERIES, BAD]}
    sft_count = cold(capsys, sample_run.sets(), "SELECT count(*) FROM sft")  # the table copied in later
    assert all(before[q][0] == 0 for q in QUERIES)

    nojvm = no_java_env(tmp_path)
    state = home / "warehouse" / STATE
    server = subprocess.Popen([str(ROOT / "submit.sh"), "serve", "--port", str(free_port()), *sets], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not state.exists():
            assert server.poll() is None, server.communicate()
            assert time.monotonic() < deadline, "serve never announced itself"
            time.sleep(0.5)
        assert json.loads(state.read_text())["warehouse"] == str(home / "warehouse")

        for query in QUERIES:
            warm = submit_sql(sets, query, env=nojvm)
            assert (warm.returncode, warm.stdout) == before[query][:2], (query, warm.stderr[-2000:])
        bad = submit_sql(sets, BAD, env=nojvm)
        rc, _, err = before[BAD]
        assert bad.returncode == rc == 1 and bad.stdout == ""
        assert bad.stderr.splitlines()[0] == err.splitlines()[0]  # distill: sql failed: AnalysisException: ...

        # a table made after the server started (the next job's output) is found by name
        shutil.copytree(sample_run.warehouse / "sft", home / "warehouse" / "sft")
        made_later = submit_sql(sets, "SELECT count(*) FROM sft", env=nojvm)
        assert (made_later.returncode, made_later.stdout) == sft_count[:2] and sft_count[0] == 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        out, err = server.communicate(timeout=120)
    assert "serve stopped" in out, err[-2000:]
    assert not state.exists()  # the state file goes with the server: `sql` takes its cold path again
    assert submit_sql(sets, QUERIES[0], env=nojvm).returncode != 0  # which needs a JVM: the warm one did not
