"""report: the paper's teacher comparison for this warehouse, per teacher and category: token lengths (the
paper's buckets, a histogram, diversity), perplexity, acceptance and attempts per accepted response, the
verify-score distribution, reject reasons, and the cost per accepted response in tokens and engine seconds.
Once `evaluate` has run, also the students: pass@1 and mean tokens per benchmark with each student's lineage
(`report_students`, the paper's Tables 1 and 2), and their lengths per difficulty (adaptive length, beside
those of any configured report.outputs). Once prepare has audited math references, their counts per source
(`report_audit`).

A teacher that replays an a-m-team release (replay shape am-release) carries the release's own verify scores:
they are set beside ours per teacher and category (`report_release`: the agreement of the two verdicts), with
the responses where the verdicts differ (`report_release_disagreements`).

Writes the `report_*` tables (each replaced whole, so it is this run's snapshot) and
<output_dir>/report/report.html with its PNG plots, and prints where the page is. A re-run whose inputs
did not change (the tables it reads, at the same Delta versions; the config; the code; report.outputs'
files) and whose tables nobody wrote since does nothing (distill.settled): <output_dir>/report/inputs.json
says what the page and tables were made from.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

from distill.report_html import in_config_order, render
from distill.settled import Settled, path_fingerprint
from distill.spark import resolve_path, side_by_side
from distill.stages import report as st
from distill.tables import read_table, replace_all, table_path
from pyspark.sql import functions as F

HELP = "compare the teachers: report_* tables and an HTML report with plots"


# the tables the report reads, and those it writes (by the key of its frames)
INPUTS = ("attempts", "sft", "eval_results", "eval_samples", "students", "experiment_results", "reference_audit")
TABLES = {"adaptive": "report_adaptive", "costs": "report_costs", "lengths": "report_lengths",
          "length_hist": "report_length_hist", "verify": "report_verify", "rejects": "report_rejects",
          "release": "report_release", "release_disagreements": "report_release_disagreements",
          "students": "report_students", "audit": "report_audit"}


def add_arguments(parser) -> None:
    pass


def run(spark, cfg, args, rec) -> None:
    from delta.tables import DeltaTable

    def read(name):
        return read_table(spark, cfg, name)

    def has(name):  # a table with rows: evaluate may have created eval_samples and stopped
        return DeltaTable.isDeltaTable(spark, table_path(cfg, name)) and not read(name).isEmpty()

    for name in ("attempts", "sft"):
        if not DeltaTable.isDeltaTable(spark, table_path(cfg, name)):
            raise SystemExit(f"report: no `{name}` table yet; run generate and score first")
    made_from = Path(resolve_path(cfg.output_dir)) / "report" / "inputs.json"
    state = Settled(spark, cfg, rec, (*INPUTS, *TABLES.values()))
    files = [path_fingerprint(src.path) for src in cfg.report.outputs]
    if made_from.with_name("report.html").is_file() and state.unchanged(files):
        print(f"report: {made_from.with_name('report.html')} is current")
        return
    attempts, sft = read("attempts"), read("sft")
    hist = st.length_histogram(sft).cache()
    frames = {
        "costs": st.costs(attempts),
        "lengths": st.lengths(sft).join(st.diversity(hist), ["teacher", "category"], "left"),
        "length_hist": hist,
        "verify": st.verify_histogram(attempts),
        "rejects": st.rejects(sft),
    }
    if st.RELEASE_SCORE in attempts.columns and not attempts.where(F.col(st.RELEASE_SCORE).isNotNull()).isEmpty():
        frames["release"] = st.release_agreement(attempts, cfg.generate.threshold)
        frames["release_disagreements"] = st.release_disagreements(attempts, cfg.generate.threshold)
    if has("reference_audit"):
        frames["audit"] = st.audit_counts(read("reference_audit"))
    results = read("eval_results") if has("eval_results") else None
    if results is not None:
        trained = read("students") if has("students") else spark.createDataFrame([], st.STUDENT_LINEAGE)
        configured = spark.createDataFrame([(s.name, s.train, s.teacher) for s in cfg.evaluate.students],
                                           "student string, train string, teacher string")
        frames["students"] = st.student_results(results, trained, configured)
    lengths = []
    if has("eval_samples"):
        levels = results if results is not None else spark.createDataFrame(
            [], "benchmark string, difficulty string, difficulty_order int")
        lengths.append(st.eval_lengths(read("eval_samples"), levels))
    outputs = _outputs(spark, cfg)
    if outputs is not None:
        lengths.append(st.output_lengths(outputs))
    if lengths:
        frames["adaptive"] = st.adaptive_lengths(*lengths)
    experiments = None
    if has("experiment_results"):  # already a table: shown on the page, not copied into a report_* table
        experiments = read("experiment_results").drop("run_id").orderBy("experiment").toPandas()
        experiments = in_config_order(experiments, cfg)

    def write(key: str, df):
        df = df.withColumn("run_id", F.lit(rec.run_id)).cache()  # computed once, for the table and the page
        version = replace_all(spark, cfg, TABLES[key], df)["version"]
        rows = df.drop("run_id").toPandas()
        df.unpersist()
        return version, rows

    local = {}
    with rec.step("tables"):  # independent tables: written side by side
        written = side_by_side(spark, [partial(write, key, df) for key, df in frames.items()])
        for key, (version, rows) in zip(frames, written, strict=True):
            rec.wrote(TABLES[key], version)
            local[key] = rows
            rec.count(f"rows.{TABLES[key]}", len(rows))
    hist.unpersist()
    if experiments is not None:
        local["experiments"] = experiments
    notes = [f"Run {rec.run_id}."]
    if cfg.score.perplexity.build_tiny_from:
        notes.append("Perplexities come from a tiny model trained on the bundled sample (the embedded default): "
                     "they show the mechanics only and say nothing about quality.")
        if "students" in frames:
            notes.append("The students' figures on the embedded default show the mechanics only: the trained "
                         "students are tiny models trained for seconds, and the replay students answer with "
                         "made-up samples. They say nothing about the teachers.")
        if experiments is not None:
            notes.append("The experiments on the embedded default show the mechanics only: each variant's "
                         "student is a tiny model trained for seconds on a few dozen rows.")
    with rec.step("render"):
        paths = render(local, resolve_path(cfg.output_dir) + "/report", notes)
    state.settle()
    made_from.write_text(json.dumps({"run_id": rec.run_id, "inputs": state.start, "tables": rec.table_versions},
                                    indent=2) + "\n")
    print(f"report: {paths['html']} ({len(paths['png'])} plots); tables: "
          f"{', '.join(TABLES[k] for k in frames)}")




def _outputs(spark, cfg):
    """model, task, response, n_tokens rows of the configured outputs (report.outputs), or None."""
    from distill.readers import iter_records

    rows = []
    for i, src in enumerate(cfg.report.outputs):
        task, response = src.fields.get("task", "task"), src.fields.get("response", "response")
        try:
            for n, record in enumerate(iter_records(src.path, src.format), start=1):
                if not isinstance(record.get(response), str) or record.get(task) is None:
                    raise ValueError(f"row {n} lacks {task!r} or a text {response!r}")
                rows.append((src.name, str(record[task]), len(rows), record[response]))
        except (OSError, ValueError) as err:
            raise SystemExit(f"config error: report.outputs.{i}.path: cannot read {src.path!r}: {err}") from None
    if not rows:
        return None
    df = spark.createDataFrame(rows, "model string, task string, seq long, response string")
    tokenizer = cfg.score.student_tokenizer or cfg.score.perplexity.model
    if tokenizer is None or not Path(tokenizer).exists():
        print("report: no student tokenizer; lengths of report.outputs are counted in whitespace words",
              file=sys.stderr)
        tokenizer = None
    return st.count_tokens(df, tokenizer)
