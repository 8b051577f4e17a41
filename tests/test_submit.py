"""The README's run command: `./submit.sh` runs the pipeline on the bundled sample (the session's shared
`sample_run`), a re-run changes no row count, `submit.sh sql` prints the tables, and the CLI lists its jobs."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from jobs.pipeline import PIPELINE
from tests.conftest import ROOT, TEST_SPARK, make_config, run_cli, run_subprocess, venv_bin

SAMPLE_LINES = sum(1 for line in (ROOT / "data/sample/queries.jsonl").read_bytes().split(b"\n") if line)


def test_cli_help_lists_the_jobs():
    done = run_subprocess([venv_bin("distill"), "--help"], timeout=120)
    assert done.returncode == 0
    for job in ("pipeline", "ingest", "prepare", "generate", "score", "curate", "export", "sql", "serve", "verify"):
        assert f"    {job}" in done.stdout


def test_bad_config_key_exits_2_before_spark_starts(tmp_path):
    done = run_subprocess([str(ROOT / "submit.sh"), "ingest", "--set", "ingest.max_line_byte=5"], timeout=120)
    assert done.returncode == 2
    assert "ingest.max_line_byte: unknown key" in done.stderr


def test_a_job_driver_maps_spark_and_delta_classes_from_the_bootstrap_archive(tmp_path):
    from distill.jvm import ARCHIVE

    assert ARCHIVE.is_file(), "scripts/bootstrap.sh makes it"
    log = tmp_path / "classes.log"
    # the JVM's own record of where each class came from: "source: shared objects file" is the archive
    sets = ["--set", f"warehouse={tmp_path / 'warehouse'}", "--set", "spark.conf.spark.ui.enabled=false"]
    gc_log = tmp_path / "gc.log"
    done = run_subprocess([str(ROOT / "submit.sh"), "sql", "SELECT 1 AS one", "--csv", *sets],
                          env={"JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={log} -Xlog:gc:file={gc_log}"},
                          timeout=300)
    assert done.returncode == 0 and done.stdout.splitlines()[-2:] == ["one", "1"], done.stderr[-3000:]
    # the driver got the rest of its options too (default_settings): the collector for the machine's cores
    assert ("Using Serial" if (os.cpu_count() or 1) <= 2 else "Using G1") in gc_log.read_text()
    shared = {m.group(1) for m in re.finditer(r"\] (\S+) source: shared objects file", log.read_text())}
    for cls in ("org.apache.spark.SparkContext", "org.apache.spark.sql.SparkSession",
                "org.apache.spark.sql.catalyst.analysis.Analyzer", "io.delta.sql.DeltaSparkSessionExtension"):
        assert cls in shared, (cls, len(shared))
    assert len(shared) > 5000, len(shared)


@pytest.mark.parametrize("master, cores, small", [("local[*]", 2, True), ("local[*]", 8, False),
                                                   ("spark://head:7077", 2, False)])
def test_a_local_driver_on_two_cores_gets_the_small_machine_jvm_options(tmp_path, monkeypatch, master, cores, small):
    from distill.jvm import driver_java_options
    from distill.spark import SMALL_MACHINE_JVM, default_settings

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    settings = default_settings(make_config(tmp_path, f"spark.master={master}"))
    options = settings.get("spark.driver.extraJavaOptions", "")
    assert ("-XX:+UseSerialGC" in options.split()) == small
    assert (" ".join(SMALL_MACHINE_JVM) in options) == small
    assert driver_java_options() in options  # the class archive's options stay


def sql_csv(capsys, warehouse, query: str) -> list[str]:
    """`distill sql QUERY --csv` in this process (the session's Spark; `submit.sh sql` itself is tested once
    below, its JVM start is not worth paying per query): the output's lines."""
    capsys.readouterr()
    sets = [a for item in (*TEST_SPARK, f"warehouse={warehouse}") for a in ("--set", item)]
    assert run_cli("sql", query, "--csv", *sets) == 0
    return capsys.readouterr().out.splitlines()


COUNT_SQL = ("SELECT (SELECT count(*) FROM queries) AS queries, (SELECT count(*) FROM quarantine) AS bad, "
             "(SELECT count(*) FROM runs) AS runs")


@pytest.mark.slow
def test_sample_pipeline_fills_every_table(sample_run, spark, capsys):
    wh, out = sample_run.warehouse, sample_run.out
    log = sample_run.stdout.splitlines()
    # every sample line became a query (the sample is valid input); runs: pipeline + its jobs
    assert sql_csv(capsys, wh, COUNT_SQL)[-1] == f"{SAMPLE_LINES},0,{1 + len(PIPELINE)}"
    # progress a person can follow: rows done of the total per long stage, all of them by the stage's end
    assert "distill: score: responses scored: 148 of 148 (100%)" in log
    assert re.search(r"^distill: generate: round 1: requests answered: ([\d,]+) of \1 \(100%\)$",
                     sample_run.stdout, re.M)
    # Spark's console progress bars stay out of a log that is not a terminal
    assert not re.search(r"\[Stage \d+:", sample_run.stdout + sample_run.stderr)

    assert sql_csv(capsys, wh, "SELECT counts['inserted'] FROM runs WHERE job = 'ingest'")[-1] == str(SAMPLE_LINES)
    # prepare judged the sample once
    assert sql_csv(capsys, wh, "SELECT counts['todo'] FROM runs WHERE job = 'prepare'")[-1] == str(SAMPLE_LINES)
    assert sql_csv(capsys, wh, "SELECT source_id FROM queries WHERE status = 'dropped' "
                   "AND source_id LIKE 'drop-%' ORDER BY 1")[-6:] == [
        "drop-empty", "drop-html-table", "drop-image", "drop-md-table", "drop-unicode", "drop-url"]

    # generate filled `attempts` for every teacher, with real verification of the rule-based categories
    assert sql_csv(capsys, wh, "SELECT teacher, count(DISTINCT query_id), count(*), sum(CAST(accepted AS INT)) "
                   "FROM attempts GROUP BY teacher ORDER BY teacher")[-3:] == [
        "teacher-a,51,58,51", "teacher-b,50,61,48", "teacher-c,49,55,49"]
    assert sql_csv(capsys, wh, "SELECT DISTINCT category, verify_status FROM attempts WHERE verify_status = 'ok' "
                   "ORDER BY 1")[-3:] == ["code,ok", "instruction_following,ok", "math,ok"]
    assert sql_csv(capsys, wh, "SELECT counts['teacher-a.generated'] FROM runs WHERE job = 'generate'")[-1] == "58"
    # IFEval: every verdict's detail holds the strict and the loose score, and loose >= strict on every row
    detail = "CAST(get_json_object(verify_detail, '$.{}') AS DOUBLE)".format
    ifeval = sql_csv(capsys, wh, f"SELECT count(*), count({detail('strict_score')}), count({detail('loose_score')}), "
                     f"sum(CAST({detail('loose_score')} >= {detail('strict_score')} AS INT)), "
                     f"sum(CAST({detail('loose_score')} > {detail('strict_score')} AS INT)) FROM attempts "
                     "WHERE category = 'instruction_following' AND verify_status = 'ok'")[-1].split(",")
    assert len(set(ifeval[:4])) == 1 and int(ifeval[0]) > 0, ifeval

    # score put each pair's accepted response into `sft` once; curate kept what passes the rules; export wrote
    # the kept rows per teacher
    assert sql_csv(capsys, wh, "SELECT teacher, count(*), sum(CAST(keep AS INT)), count(ppl) FROM sft "
                   "GROUP BY teacher ORDER BY teacher")[-3:] == [
        "teacher-a,51,47,51", "teacher-b,48,45,48", "teacher-c,49,45,49"]
    assert sql_csv(capsys, wh, "SELECT counts['teacher-a.scored'] FROM runs WHERE job = 'score'")[-1] == "51"
    for teacher, kept in (("teacher-a", 47), ("teacher-b", 45), ("teacher-c", 45)):
        manifest = json.loads((out / "export" / teacher / "manifest.json").read_text())
        assert manifest["rows"] == kept and manifest["files"]["jsonl"] and manifest["files"]["parquet"]

    # one short training run per teacher: two Horovod workers, every step recorded, each student recorded
    train = sql_csv(capsys, wh, "SELECT counts['train.tiny-a.samples'] + counts['train.tiny-a.too_long'], "
                    "counts['train.tiny-b.samples'] + counts['train.tiny-b.too_long'], "
                    "counts['train.tiny-c.samples'] + counts['train.tiny-c.too_long'], counts['train.steps'], "
                    "counts['train.steps_run'] FROM runs WHERE job = 'train'")[1:]
    (first,) = [line.split(",") for line in train]
    assert first[:3] == ["47", "45", "45"] and first[3] == first[4] != "0", first  # each teacher's kept rows
    assert sql_csv(capsys, wh, "SELECT student, concat_ws('+', teachers), sft_version FROM students "
                   "ORDER BY 1")[1:] == ["tiny-a,teacher-a,4", "tiny-b,teacher-b,4", "tiny-c,teacher-c,4"]
    for student in ("tiny-a", "tiny-b", "tiny-c"):
        (model,) = (out / "train" / student).glob("run-*/model")
        assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()

    # every student on every benchmark: the replayed ones' figures are their bundled samples' (4 per math item,
    # 2 per code item; the code window leaves c-04 out); the tiny students' text is noise
    rows = sql_csv(capsys, wh, "SELECT student, benchmark, items, samples_min, complete, round(pass_at_1, 4) "
                   "FROM eval_results WHERE difficulty = 'all' ORDER BY benchmark, student")
    assert rows[1:] == [f"{s},sample-code,3,2,True,{p}" for s, p in (
        ("replay-adaptive", "0.8333"), ("replay-flat", "0.5"), ("tiny-a", "0.0"), ("tiny-b", "0.0"),
        ("tiny-c", "0.0"))] + [f"{s},sample-math,12,4,True,{p}" for s, p in (
        ("replay-adaptive", "0.8958"), ("replay-flat", "0.6875"), ("tiny-a", "0.0"), ("tiny-b", "0.0"),
        ("tiny-c", "0.0"))], rows
    assert sql_csv(capsys, wh, "SELECT count(*) FROM eval_samples")[-1] == str(5 * (12 * 4 + 3 * 2))

    # the report, last: the students' Table 1 and 2 with their lineage, and adaptive length from eval_samples:
    # replay-adaptive's math answers grow with the difficulty, replay-flat's stay flat (data/sample/README.md)
    page = (out / "report" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 8 and "Students" in page
    assert sql_csv(capsys, wh, "SELECT student, benchmark, round(pass_at_1, 4), concat_ws('+', teachers), "
                   "sft_version FROM report_students WHERE student IN ('replay-flat', 'tiny-b') "
                   "ORDER BY 1, 2")[1:] == ["replay-flat,sample-code,0.5,teacher-b,", "replay-flat,sample-math,0.6875,"
                                            "teacher-b,", "tiny-b,sample-code,0.0,teacher-b,4",
                                            "tiny-b,sample-math,0.0,teacher-b,4"]
    rows = [line.split(",") for line in sql_csv(capsys, wh, "SELECT model, task, responses, mean_tokens FROM "
                                                "report_adaptive WHERE model LIKE 'replay-%' AND task LIKE "
                                                "'sample-math%' ORDER BY model, task_order")[1:]]
    assert [(m, t, n) for m, t, n, _ in rows] == [(m, f"sample-math:{t}", "16") for m in ("replay-adaptive",
                                                  "replay-flat") for t in ("easy", "medium", "hard")]
    a, b = [float(r[3]) for r in rows[:3]], [float(r[3]) for r in rows[3:]]
    assert a[0] < a[1] < a[2] and a[2] > 3 * a[0] and max(b) < 1.5 * min(b), rows


@pytest.mark.slow
def test_a_rerun_of_the_sample_pipeline_does_nothing_twice(sample_run, spark, tmp_path, capsys):
    home = sample_run.copy(tmp_path)
    # in this process (how the pipeline starts is what sample_run shows; a JVM start here would add ~40 s)
    assert run_cli(*sample_run.sets(home)) == 0
    scored = [line for line in capsys.readouterr().out.splitlines() if "score: responses scored" in line]
    assert scored == ["distill: score: responses scored: 0 of 0"], scored
    # `submit.sh sql` itself: the same CSV as in-process, no row count changed, the runs twice
    out = run_subprocess([str(ROOT / "submit.sh"), "sql", COUNT_SQL, "--csv", *sample_run.sets(home)])
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[-2:] == ["queries,bad,runs", f"{SAMPLE_LINES},0,{2 * (1 + len(PIPELINE))}"]

    wh = home / "warehouse"
    rows = [json.loads(line.split(",", 1)[1].strip('"').replace('""', '"')) for line in sql_csv(
        capsys, wh, "SELECT job, counts FROM runs WHERE job = 'ingest' ORDER BY started_at")[-2:]]
    assert rows[0]["inserted"] == SAMPLE_LINES and rows[1].get("inserted", 0) == 0
    assert rows[1]["files_unchanged"] == 1 and rows[1].get("lines", 0) == 0  # the sample file is not read again
    # the re-run found nothing to judge, generate, score or train
    assert sql_csv(capsys, wh, "SELECT counts['todo'] FROM runs WHERE job = 'prepare' "
                   "ORDER BY started_at")[-2:] == [str(SAMPLE_LINES), "0"]
    assert sql_csv(capsys, wh, "SELECT coalesce(counts['teacher-a.generated'], 0) FROM runs WHERE job = 'generate' "
                   "ORDER BY started_at")[-2:] == ["58", "0"]
    assert sql_csv(capsys, wh, "SELECT coalesce(counts['teacher-a.scored'], 0) FROM runs WHERE job = 'score' "
                   "ORDER BY started_at")[-2:] == ["51", "0"]
    first, second = [line.split(",") for line in sql_csv(
        capsys, wh, "SELECT counts['train.samples'] + counts['train.too_long'], counts['train.steps'], "
        "counts['train.steps_run'] FROM runs WHERE job = 'train' ORDER BY started_at")[-2:]]
    assert second == [first[0], first[1], "0"], (first, second)
    assert sql_csv(capsys, wh, "SELECT counts['verified'] FROM runs WHERE job = 'evaluate' "
                   "ORDER BY started_at")[-2:] == ["0", "0"]  # verified with generation, never again
    assert sql_csv(capsys, wh, "SELECT coalesce(counts['replay-flat.generated'], 0) FROM runs "
                   "WHERE job = 'evaluate' ORDER BY started_at")[-2:] == ["54", "0"]
    # each of those runs settled (distill.settled), so the next re-run's jobs stop before a query of their own
    assert run_cli(*sample_run.sets(home)) == 0
    out = capsys.readouterr().out
    assert "round 1" not in out and "responses scored" not in out, out
    assert sql_csv(capsys, wh, "SELECT job FROM runs WHERE counts['settled_before'] = 1 ORDER BY job")[1:] == [
        "evaluate", "generate", "prepare", "report", "score"]


@pytest.mark.slow
def test_the_teacher_report_notebook_runs_headless_against_the_sample_warehouse(sample_run):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks/teacher_report.ipynb", as_version=4)
    os.environ["DISTILL_WAREHOUSE"] = str(sample_run.warehouse)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        del os.environ["DISTILL_WAREHOUSE"]
    text = {i: "".join(o.get("data", {}).get("text/plain", "") for o in c.outputs)
            for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    assert "teacher-a         51    47" in text[3]
    assert sum("image/png" in o.get("data", {}) for o in nb.cells[7].outputs) == 2
    assert sum("image/png" in o.get("data", {}) for o in nb.cells[11].outputs) == 1  # adaptive length


def test_a_kept_sample_run_that_a_killed_session_left_unfinished_fails_at_once(tmp_path, tmp_path_factory):
    """DISTILL_TEST_SAMPLE_RUN=DIR after a session was killed while it made the run: the next session says
    so and what to do, instead of waiting half an hour for a `done` nobody will write."""
    from tests.conftest import SharedRun

    gone = run_subprocess([sys.executable, "-c", "import os; print(os.getpid())"])
    (tmp_path / "claimed").write_text(gone.stdout.strip())
    run = SharedRun(tmp_path_factory, "sample-run", tmp_path)
    run.start(["false"])  # claimed already: starts nothing
    assert run.proc is None
    with pytest.raises(AssertionError, match="killed test process"):
        run.result(timeout=60)
    (tmp_path / "claimed").write_text(str(os.getpid()))  # a live claimer: still making it
    assert not run.abandoned()
