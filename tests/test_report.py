"""The report job over inline `attempts`/`sft` (the same fixture as tests/test_score.py): the report_* tables
hold the figures counted here from the inline rows, and the HTML page embeds every plot; a slow test opens it
in headless Chromium and checks that every image loads."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_score import ATTEMPTS, warehouse  # noqa: F401 - the fixture

PNG = b"\x89PNG\r\n\x1a\n"


def table(spark, cfg, name):
    return spark.read.format("delta").load(f"{cfg.warehouse}/{name}")


@pytest.fixture
def reported(spark, cfg, warehouse):  # noqa: F811
    for job in ("score", "curate", "report"):
        assert run_cli(job, *warehouse["args"]) == 0
    return Path(cfg.output_dir) / "report" / "report.html"


def test_report_tables_hold_the_counts_of_the_inline_rows(spark, cfg, reported):
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


def test_the_page_embeds_every_plot(reported):
    page = reported.read_text()
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 7 and all(base64.b64decode(i).startswith(PNG) for i in images)
    assert len(list(reported.parent.glob("*.png"))) == 7


@pytest.mark.slow
def test_the_page_opens_in_headless_chromium_with_every_image_loaded(reported, tmp_path):
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
