"""The report job over inline `attempts`/`sft` (the same fixture as tests/test_score.py): the report_* tables
hold the figures counted here from the inline rows, and the HTML page embeds every plot; a slow test opens it
in headless Chromium and checks that every image loads. Without eval tables there is no Students section;
with inline `students` / `eval_results` / `eval_samples`, report_students holds Table 1 and 2 with the
lineage, the page shows them with the incomplete result marked, and adaptive length comes from the samples."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from distill.tables import TABLES, merge_new
from pyspark.testing import assertDataFrameEqual

from tests.conftest import cli_overrides, make_config, run_cli
from tests.test_score import ATTEMPTS, inline_warehouse, warehouse  # noqa: F401 - the fixture

PNG = b"\x89PNG\r\n\x1a\n"


def table(spark, cfg, name):
    return spark.read.format("delta").load(f"{cfg.warehouse}/{name}")


def report_inline(warehouse: dict, cfg) -> Path:  # noqa: F811
    for job in ("score", "curate", "report"):
        assert run_cli(job, *warehouse["args"]) == 0
    return Path(cfg.output_dir) / "report" / "report.html"


@pytest.fixture(scope="module")
def shared(spark, tiny_model, tmp_path_factory):
    """One score, curate and report run over the inline rows, for the tests that only read what it made."""
    home = tmp_path_factory.mktemp("report")
    cfg = make_config(home)
    return cfg, report_inline(inline_warehouse(spark, cfg, tiny_model, home), cfg)


@pytest.fixture
def reported(cfg, warehouse):  # noqa: F811
    """A run of its own, for a test that changes the warehouse."""
    return report_inline(warehouse, cfg)


def test_report_tables_hold_the_counts_of_the_inline_rows(spark, shared):
    cfg, _ = shared
    costs = {(r.teacher, r.category): r for r in table(spark, cfg, "report_costs").collect()}
    for teacher in ("teacher-a", "teacher-b", "teacher-c"):
        mine = [a for a in ATTEMPTS if a[1] == teacher]
        pairs = {a[0] for a in mine}
        accepted = {a[0] for a in mine if a[4]}
        row = costs[(teacher, "all")]
        assert (row.pairs, row.attempts, row.accepted) == (len(pairs), len(mine), len(accepted))
        assert row.attempts_per_accepted == pytest.approx(len(mine) / len(accepted))
    rejects = {(r.teacher, r.reason): r["count"] for r in table(spark, cfg, "report_rejects")
               .where("category = 'all'").collect()}
    assert rejects == {("teacher-a", "structure:no_think"): 1, ("teacher-a", "structure:truncated"): 1,
                       ("teacher-a", "repetition"): 1, ("teacher-b", "corpus_ngram"): 21}
    lengths = {r.teacher: r for r in table(spark, cfg, "report_lengths").where("category = 'all'").collect()}
    sft = {r.teacher: r for r in spark.sql(
        f"SELECT teacher, count(*) AS n, avg(ppl) AS ppl FROM delta.`{cfg.warehouse}/sft` GROUP BY teacher").collect()}
    for teacher, r in lengths.items():
        assert r.responses == sft[teacher].n and r.mean_ppl == pytest.approx(sft[teacher].ppl)
    assert len({r.run_id for r in table(spark, cfg, "report_costs").collect()}) == 1


def test_the_page_embeds_every_plot(shared):
    cfg, reported = shared
    page = reported.read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 7 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert len(list(reported.parent.glob("*.png"))) == 7
    # no evaluate yet: the page and tables are the teachers' only
    assert "Students" not in page and not (Path(cfg.warehouse) / "report_students").exists()


@pytest.mark.slow
def test_the_page_opens_in_headless_chromium_with_every_image_loaded(shared, tmp_path):
    _, reported = shared
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        # CI installs it and says so: there a missing browser is a failure, not a skip nobody reads
        if os.environ.get("DISTILL_EXPECT_CHROMIUM") == "1":
            pytest.fail("DISTILL_EXPECT_CHROMIUM=1 but chromium is not on PATH")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    probe = tmp_path / "probe.html"
    probe.write_text(f"""<html><body><iframe id="f" src="{reported.as_uri()}"></iframe><script>
document.getElementById("f").onload = () => {{
  const imgs = [...document.getElementById("f").contentDocument.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-result", ok + "/" + imgs.length);
}};</script></body></html>""")
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert 'data-result="7/7"' in done.stdout, (done.stdout[-2000:], done.stderr[-2000:])


def test_adaptive_length_per_task_from_configured_outputs(spark, cfg, warehouse, tmp_path):  # noqa: F811
    import json

    from transformers import AutoTokenizer

    rows = {"student-a": [("easy", "short one"), ("easy", "also short"), ("hard", "a much longer answer " * 20)],
            "student-b": [("easy", "brief"), ("hard", "longer " * 5)]}
    paths = []
    for model, items in rows.items():
        path = tmp_path / f"{model}.jsonl"
        path.write_text("".join(json.dumps({"level": t, "output": r}) + "\n" for t, r in items))
        paths.append(f"{{name: {model}, path: '{path}', fields: {{task: level, response: output}}}}")
    args = [*warehouse["args"], "--set", f"report.outputs=[{', '.join(paths)}]"]
    for job in ("score", "curate", "report"):
        assert run_cli(job, *args) == 0
    tok = AutoTokenizer.from_pretrained(warehouse["model"])
    got = {(r.model, r.task): (r.task_order, r.responses, r.mean_tokens)
           for r in table(spark, cfg, "report_adaptive").collect()}
    want = {}
    for model, items in rows.items():
        for task in {t for t, _ in items}:
            lens = [len(tok(r, add_special_tokens=False)["input_ids"]) for t, r in items if t == task]
            want[(model, task)] = ({"easy": 1, "hard": 2}[task], len(lens), pytest.approx(sum(lens) / len(lens)))
    assert got == want
    assert "Adaptive length" in (Path(cfg.output_dir) / "report" / "report.html").read_text()


def rows(spark, name, values):
    return spark.createDataFrame(values, TABLES[name].ddl.replace(" not null", ""))


@pytest.fixture
def evaluated(spark, cfg):
    """attempts/sft of one teacher, and two students evaluated on `math` (levels easy, hard; 2 samples per item):
    tiny-a, trained here, complete; replay-r, replayed (its teacher named in the config), lacking a sample."""
    now = datetime.now(timezone.utc)
    merge_new(spark, cfg, "attempts", rows(spark, "attempts", [
        {"query_id": "q1", "teacher": "teacher-a", "attempt": 1, "category": "math", "engine": "replay", "model": "m",
         "seed": 1, "response": "r", "tokens_out": 5, "gen_seconds": 0.1, "run_id": "g0", "generated_at": now,
         "verify_score": 1.0, "verify_status": "ok", "accepted": True}]))
    merge_new(spark, cfg, "sft", rows(spark, "sft", [
        {"query_id": "q1", "teacher": "teacher-a", "attempt": 1, "category": "math",
         "messages": [{"role": "user", "content": "q"}], "response": "r", "tokens_out": 5, "n_tokens": 6,
         "run_id": "s0", "added_at": now, "keep": True}]))
    merge_new(spark, cfg, "students", rows(spark, "students", [
        {"student": "tiny-a", "teachers": ["teacher-a"], "sft_version": 3, "set_key": "set-a",
         "train_key": "8db2f4cbc72b69e1", "base_model": "base", "model_path": "/m/tiny-a", "samples": 1,
         "run_id": "t0", "trained_at": now}]))
    samples = [  # student, item, difficulty, sample, tokens_out, correct
        ("tiny-a", "e1", "easy", 1, 10, True), ("tiny-a", "e1", "easy", 2, 10, False),
        ("tiny-a", "h1", "hard", 1, 20, True), ("tiny-a", "h1", "hard", 2, 20, False),
        ("replay-r", "e1", "easy", 1, 30, True), ("replay-r", "e1", "easy", 2, 30, False),
        ("replay-r", "h1", "hard", 1, 50, False),  # its second sample is missing: incomplete
    ]
    merge_new(spark, cfg, "eval_samples", rows(spark, "eval_samples", [
        {"student": s, "benchmark": "math", "item_id": i, "sample": k, "kind": "math", "difficulty": d,
         "item_hash": f"h-{i}", "gen_key": f"g-{s}", "engine": "replay", "model": s, "seed": 1, "response": "r",
         "tokens_out": n, "run_id": "e0", "generated_at": now, "score": float(ok), "status": "ok", "correct": ok}
        for s, i, d, k, n, ok in samples]))
    results = [  # student, difficulty, order, complete, pass@1, stderr, mean tokens
        ("tiny-a", "all", 0, True, 0.5, 0.25, 15.0), ("tiny-a", "easy", 1, True, 0.5, 0.5, 10.0),
        ("tiny-a", "hard", 2, True, 0.5, 0.5, 20.0),
        ("replay-r", "all", 0, False, 1 / 3, 0.2, 110 / 3), ("replay-r", "easy", 1, True, 0.5, 0.5, 30.0),
        ("replay-r", "hard", 2, False, 0.0, None, 50.0),
    ]
    merge_new(spark, cfg, "eval_results", rows(spark, "eval_results", [
        {"student": s, "benchmark": "math", "difficulty": d, "difficulty_order": o, "items": 2, "bad_items": 0,
         "samples_expected": 2, "complete": c, "pass_at_1": p, "pass_at_1_stderr": e, "mean_tokens": t,
         "gen_key": f"g-{s}", "run_id": "e0", "evaluated_at": now} for s, d, o, c, p, e, t in results]))
    students = "[{name: tiny-a, train: tiny-a}, {name: replay-r, engine: replay, model: r.jsonl, teacher: teacher-b}]"
    return [*cli_overrides(cfg), "--set", f"evaluate.students={students}",
            "--set", "score.perplexity.build_tiny_from=[data/sample/responses/teacher-a.jsonl]"]


def test_report_with_eval_tables_shows_the_students(spark, cfg, evaluated):
    assert run_cli("report", *evaluated) == 0
    assertDataFrameEqual(table(spark, cfg, "report_students").drop("run_id"), spark.createDataFrame([
        ("tiny-a", "math", 0.5, 0.25, 15.0, True, ["teacher-a"], 3, "8db2f4cbc72b69e1"),
        ("replay-r", "math", 1 / 3, 0.2, 110 / 3, False, ["teacher-b"], None, None),
    ], "student string, benchmark string, pass_at_1 double, pass_at_1_stderr double, mean_tokens double, "
       "complete boolean, teachers array<string>, sft_version long, train_key string"))
    assertDataFrameEqual(table(spark, cfg, "report_adaptive").drop("run_id"), spark.createDataFrame([
        ("tiny-a", "math:easy", 1, 2, 10.0, 10.0), ("tiny-a", "math:hard", 2, 2, 20.0, 20.0),
        ("replay-r", "math:easy", 1, 2, 30.0, 30.0), ("replay-r", "math:hard", 2, 1, 50.0, 50.0),
    ], "model string, task string, task_order int, responses long, mean_tokens double, median_tokens double"))
    page = (Path(cfg.output_dir) / "report" / "report.html").read_text()
    assert "<h2>Students</h2>" in page and "show the mechanics only" in page
    table1, table2 = page.split("<h3>Table 1")[1].split("<h3>Table 2")
    assert ("<tr><th>tiny-a</th><td>teacher-a</td><td>3</td><td>8db2f4cb</td><td>50.0 ± 25.0</td></tr>"
            in table1)
    assert ('<tr><th>replay-r</th><td>teacher-b</td><td>–</td><td>–</td>'
            '<td class="incomplete">incomplete (33.3 ± 20.0)</td></tr>' in table1)
    assert '<td class="incomplete">incomplete (37)</td>' in table2 and "<td>15</td>" in table2
    assert page.count('src="data:image/png;base64,') == 8  # the teachers' 7 and adaptive length


def test_a_report_of_unchanged_inputs_is_not_made_again(spark, cfg, warehouse, reported):  # noqa: F811
    tables = [f"report_{k}" for k in ("costs", "lengths", "length_hist", "verify", "rejects")]

    def report() -> tuple:
        assert run_cli("report", *warehouse["args"]) == 0
        last = table(spark, cfg, "runs").where("job = 'report'").orderBy("started_at").collect()[-1]
        made = [spark.sql(f"DESCRIBE HISTORY delta.`{cfg.warehouse}/{t}` LIMIT 1").first().version for t in tables]
        return last.counts.get("settled_before", 0), made, reported.stat().st_mtime_ns

    first = report()  # another code version than the fixture's run: made again
    assert first[0] == 0
    assert report() == (1, first[1], first[2])  # nothing changed: not a table, not the page
    spark.sql(f"UPDATE delta.`{cfg.warehouse}/attempts` SET gen_seconds = gen_seconds + 1")
    changed = report()  # an input table moved: made again
    assert changed[0] == 0 and all(b > a for a, b in zip(first[1], changed[1], strict=True))
    reported.unlink()
    assert report()[0] == 0 and reported.is_file()  # the page was removed: made again
