"""Faults and concurrency, end to end: `./submit.sh JOB` subprocesses on the bundled sample, killed for real.

Every scenario ends by comparing its tables with those of one uninterrupted run (the session's shared
`sample_run` of the whole pipeline, the `baseline` fixture): queries (status, drop_reason),
decontam_matches, the embeddings' keys, the attempts ledger (response, verification, accepted) and sft
(scores, keep, reject_reason) must be equal as sorted row lists, with no duplicate key in any table.

- test_killed_jobs_rerun_to_the_uninterrupted_tables: one warehouse, one job after the other:
  `prepare` SIGKILLed (the whole spark-submit process group) right after its embeddings commit, then again
  dying at the crash point after `decontam_matches` is replaced and before `queries` is decided, then re-run
  (which embeds nothing again); `generate` SIGKILLed right after round 1's MERGE, then re-run (the attempts
  stored before the kill keep their run_id and generated_at, and the re-run generates exactly the missing
  ones, though every generation task's first attempt kills its Python worker after answering: master
  local[2,2] lets Spark retry a task, the log shows the lost tasks, and no attempt is stored twice);
  `score` SIGKILLed after `sft` got its rows and before they are scored, then re-run; `curate`.
  Each kill is checked to have landed between two commits of its job. The runs that are not killed run
  in this process (`run_ok`): how they start does not matter to what the kills prove, and a JVM start
  per re-run does.
- test_a_killed_evaluate_reruns_to_the_uninterrupted_samples: `evaluate` SIGKILLed right after its round's
  MERGE (before tokens are counted and figures written), then re-run: it generates nothing more, and
  eval_samples and eval_results equal the uninterrupted run's.
- test_two_generate_runs_at_once_leave_a_consistent_ledger: two `generate` runs started together on one
  warehouse. Delta's optimistic concurrency makes the later commit conflict; the writes retry on top of the
  other run's commit (or the job fails with exit 1 and says why). No duplicate attempts, both runs are in
  `runs`, and a plain re-run afterwards leaves the ledger equal to the baseline's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from distill.tables import TABLES

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow

# Small Spark for a 2-core machine (the conftest's test settings), no UI, progress lines unbuffered.
SPARK = ["spark.master=local[2]", "spark.conf.spark.ui.enabled=false", "spark.conf.spark.ui.showConsoleProgress=false",
         "spark.conf.spark.sql.shuffle.partitions=2", "spark.conf.spark.default.parallelism=2",
         "spark.conf.spark.databricks.delta.snapshotPartitions=1"]


class Job:
    """A `./submit.sh JOB` run in its own process group: `kill_on` (a regex) SIGKILLs the whole group the
    moment a stdout line matches it."""

    def __init__(self, job: str, home: Path, *extra: str, env: dict | None = None, kill_on: str | None = None):
        args = job_args(home, *extra)
        self.job, self.kill_on, self.killed, self.lines = job, kill_on, False, []
        home.mkdir(parents=True, exist_ok=True)
        self.err_path = home / f"{job}-{time.monotonic_ns()}.err"
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(ROOT / "submit.sh"), job, *args], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=self.err_path.open("w"), start_new_session=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.kill_on and not self.killed and re.search(self.kill_on, line):
                self.killed = True
                os.killpg(self.proc.pid, signal.SIGKILL)  # spark-submit's JVM and its Python processes with it

    def wait(self, timeout: float = 1800) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        self.reader.join(30)
        print(f"{self.job}: exit {rc} after {time.monotonic() - self.started:.0f} s"
              + (" (killed)" if self.killed else ""))
        return rc

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()


def job_args(home: Path, *extra: str) -> list[str]:
    """A job over `home`'s warehouse, scoring with the shared sample run's reference model (REFERENCE)."""
    args = []
    for item in [*SPARK, f"warehouse={home / 'warehouse'}", f"output_dir={home / 'out'}",
                 f"score.perplexity.model={REFERENCE[0]}", *extra]:
        args += ["--set", item]
    return args


def submit_ok(job: str, home: Path, *extra: str, env: dict | None = None) -> Job:
    j = Job(job, home, *extra, env=env)
    assert j.wait() == 0, f"{job} failed:\n{j.stdout[-2000:]}\n{j.stderr[-4000:]}"
    return j


def run_ok(job: str, home: Path) -> None:
    """A job that is not killed, run in this process on the test session's Spark."""
    home.mkdir(parents=True, exist_ok=True)
    assert run_cli(job, *job_args(home)) == 0, job


def read(spark, home: Path, name: str):
    return spark.read.format("delta").load(str(home / "warehouse" / name))


def exists(home: Path, name: str) -> bool:
    return (home / "warehouse" / name / "_delta_log").is_dir()


# what must be equal to an uninterrupted run (perplexity to 6 digits: float sums in another batch order)
COMPARED = {
    "queries": ["query_id", "status", "drop_reason"],
    "decontam_matches": ["query_id", "benchmark", "item_id", "method", "similarity"],
    "embeddings": ["text_hash", "model"],
    "attempts": ["query_id", "teacher", "attempt", "response", "verify_status", "verify_score", "accepted"],
    "sft": ["query_id", "teacher", "attempt", "n_tokens", "ppl", "structure_ok", "structure_reason",
            "ngram_max_repeat", "ngram_repeat_fraction", "ngram_corpus_max", "keep", "reject_reason"],
}


def rows(spark, home: Path, name: str) -> list[tuple]:
    def cell(v):
        return f"{v:.6g}" if isinstance(v, float) else v

    got = [tuple(cell(v) for v in r) for r in read(spark, home, name).select(*COMPARED[name]).collect()]
    return sorted(got, key=repr)


def tables(spark, home: Path, names=tuple(COMPARED)) -> dict[str, list[tuple]]:
    out = {}
    for name in names:
        out[name] = rows(spark, home, name)
        assert_unique_keys(spark, home, name)
    return out


def assert_unique_keys(spark, home: Path, name: str) -> None:
    keys = [tuple(r) for r in read(spark, home, name).select(*TABLES[name].keys).collect()]
    assert len(keys) == len(set(keys)), f"duplicate keys in {name}"


def runs_of(spark, home: Path, job: str) -> list:
    return read(spark, home, "runs").where(f"job = '{job}'").orderBy("started_at").collect()


def generated(run) -> int:
    return sum(v for k, v in run.counts.items() if k.endswith(".generated"))


REFERENCE: list[Path] = []
# the tables only ingest and prepare write
PREPARED = ("queries", "quarantine", "ingest_files", "decontam_matches", "embeddings")


@pytest.fixture(scope="module")
def homes(tmp_path_factory, sample_run) -> Path:
    REFERENCE[:] = [sample_run.reference]
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def baseline(sample_run, spark):
    """The uninterrupted run's tables."""
    want = tables(spark, sample_run.home)
    assert want["attempts"] and want["sft"] and want["decontam_matches"]
    assert [generated(r) for r in runs_of(spark, sample_run.home, "generate")] == [len(want["attempts"])]
    return want


def prepared(sample_run, homes: Path, name: str) -> Path:
    """A fresh warehouse holding the uninterrupted run's state after ingest and prepare: the tables that only
    those two jobs write, copied."""
    return sample_run.copy(homes / name, PREPARED)


def test_killed_jobs_rerun_to_the_uninterrupted_tables(homes, spark, baseline):
    home = homes / "killed"
    run_ok("ingest", home)

    # prepare, SIGKILLed once its embeddings are committed (decontamination and decisions still to come)
    j = Job("prepare", home, kill_on=r"^distill: prepare: embed done in")
    assert j.wait() == -signal.SIGKILL and j.killed
    assert read(spark, home, "embeddings").count() > 0
    assert not exists(home, "decontam_matches")
    assert {r.status for r in read(spark, home, "queries").select("status").collect()} == {"new"}
    # ... dying again between its two decisive commits: matches replaced, queries not decided
    j = Job("prepare", home, env={"DISTILL_CRASH_AT": "prepare.matched"})
    assert j.wait() == 137
    assert read(spark, home, "decontam_matches").count() == len(baseline["decontam_matches"])
    assert {r.status for r in read(spark, home, "queries").select("status").collect()} == {"new"}
    run_ok("prepare", home)
    assert runs_of(spark, home, "prepare")[-1].counts["embedded"] == 0  # the cache survived both kills
    assert tables(spark, home, ("queries", "decontam_matches", "embeddings")) == {
        k: baseline[k] for k in ("queries", "decontam_matches", "embeddings")}

    # generate, SIGKILLed when round 1 is in the ledger (round 2 in flight)
    j = Job("generate", home, kill_on=r"^distill: generate: generate done in")
    assert j.wait() == -signal.SIGKILL and j.killed
    before = {(r.query_id, r.teacher, r.attempt): (r.run_id, r.generated_at)
              for r in read(spark, home, "attempts").collect()}
    assert 0 < len(before) < len(baseline["attempts"])
    assert len({run_id for run_id, _ in before.values()}) == 1
    # ... re-run where every generation task's first attempt kills its Python worker after answering (master
    # local[2,2] lets Spark retry a task): the lost tasks are in the log and no attempt is stored twice
    j = submit_ok("generate", home, "spark.master=local[2,2]", env={"DISTILL_CRASH_AT": "generate.task"})
    lost = re.findall(r"Lost task \S+ in stage \S+ .*", j.stderr)
    assert lost and "Python worker exited unexpectedly" in j.stderr, j.stderr[-3000:]
    after = {(r.query_id, r.teacher, r.attempt): (r.run_id, r.generated_at)
             for r in read(spark, home, "attempts").collect()}
    assert {k: after[k] for k in before} == before  # nothing stored was generated again
    assert generated(runs_of(spark, home, "generate")[-1]) == len(baseline["attempts"]) - len(before)
    assert tables(spark, home, ("attempts",))["attempts"] == baseline["attempts"]

    # score, SIGKILLed when sft has its rows and none is scored yet
    j = Job("score", home, kill_on=r"^distill: score: select done in")
    assert j.wait() == -signal.SIGKILL and j.killed
    sft = read(spark, home, "sft").select("score_key").collect()
    assert len(sft) == len(baseline["sft"]) and all(r.score_key is None for r in sft)
    run_ok("score", home)
    run_ok("curate", home)
    assert tables(spark, home) == baseline


def test_a_killed_evaluate_reruns_to_the_uninterrupted_samples(homes, sample_run, spark):
    home = homes / "evaluate"
    kept = [p.name for p in sample_run.warehouse.iterdir() if not p.name.startswith(("eval_", "_"))]
    sample_run.copy(home, tuple(kept))  # everything up to train; the students' models are read where they are

    def eval_rows(where: Path, table: str, columns: list[str]) -> list[tuple]:
        df = read(spark, where, table).select(*columns)
        return sorted(tuple(r) for r in df.collect())

    keys = ["student", "benchmark", "item_id", "sample"]
    verdicts = [*keys, "status", "score", "correct", "response", "tokens_out"]
    j = Job("evaluate", home, kill_on=r"^distill: evaluate: generate done in")
    assert j.wait() == -signal.SIGKILL and j.killed
    stored = eval_rows(home, "eval_samples", verdicts)
    assert stored and not exists(home, "eval_results")
    run_ok("evaluate", home)
    last = runs_of(spark, home, "evaluate")[-1]
    assert last.counts.get("verified", 0) == 0
    assert sum(v for k, v in last.counts.items() if k.endswith(".generated")) == 0
    after = eval_rows(home, "eval_samples", verdicts)
    assert [r[:4] for r in after] == eval_rows(sample_run.home, "eval_samples", keys)  # every sample, once
    assert [r[:8] for r in after] == [r[:8] for r in stored]  # nothing stored was generated or verified again
    # The replayed students' samples equal the uninterrupted run's. The tiny students' text does not: the
    # transformers engine samples a batch at a time, and this run's Spark settings batch the requests otherwise.
    assert [r for r in after if r[0].startswith("replay-")] == [
        r for r in eval_rows(sample_run.home, "eval_samples", verdicts) if r[0].startswith("replay-")]
    figures = ["student", "benchmark", "difficulty", "items", "complete", "pass_at_1", "pass_at_1_stderr"]
    assert eval_rows(home, "eval_results", figures) == eval_rows(sample_run.home, "eval_results", figures)
    assert_unique_keys(spark, home, "eval_samples")


def test_two_generate_runs_at_once_leave_a_consistent_ledger(homes, sample_run, spark, baseline):
    home = prepared(sample_run, homes, "concurrent")
    jobs = [Job("generate", home), Job("generate", home)]
    codes = [j.wait() for j in jobs]
    for j, rc in zip(jobs, codes, strict=True):
        if not (rc == 0 or (rc == 1 and "another job committed to it first" in j.stderr)):
            pytest.fail(f"generate exited {rc}\n--- stdout\n{j.stdout[-6000:]}\n--- stderr\n{j.stderr[-8000:]}")
    assert 0 in codes
    retries = [line for j in jobs for line in j.stderr.splitlines() if "another job committed to it first" in line]
    print(f"exit codes {codes}; {len(retries)} writes retried after a conflict")
    for line in retries[:10]:
        print("  " + line[:300])
    assert_unique_keys(spark, home, "attempts")
    done = runs_of(spark, home, "generate")
    assert sorted(r.status for r in done) == sorted("succeeded" if rc == 0 else "failed" for rc in codes)
    assert_unique_keys(spark, home, "runs")

    run_ok("generate", home)
    assert tables(spark, home, ("attempts",))["attempts"] == baseline["attempts"]


def test_a_write_that_conflicts_is_retried_then_fails_clearly(monkeypatch):
    import distill.tables as t
    from delta.exceptions import ConcurrentAppendException

    monkeypatch.setattr("time.sleep", lambda s: None)
    calls = []

    def write(fail: int):
        calls.append(1)
        if len(calls) <= fail:
            raise ConcurrentAppendException(message="Files were added by a concurrent update.")
        return "written"

    before = t.conflict_retries
    assert t._retry_on_conflict("attempts", lambda: write(2)) == "written"
    assert len(calls) == 3 and t.conflict_retries == before + 2
    calls.clear()
    with pytest.raises(RuntimeError, match=r"writing `attempts`: another job committed to it first 5 times in a row"):
        t._retry_on_conflict("attempts", lambda: write(99))
    assert len(calls) == t.CONFLICT_RETRIES + 1


def test_a_table_another_job_is_creating_is_waited_for_only_while_creating(monkeypatch):
    import distill.tables as t

    monkeypatch.setattr("time.sleep", lambda s: None)
    calls = []

    def create():  # the other job has made the log folder, not yet its first commit: Delta calls the table missing
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("[DELTA_TABLE_NOT_FOUND] Delta table `/w/attempts` doesn't exist.")
        return "found the other job's table"

    assert t._retry_on_conflict("attempts", create, creating=True) == "found the other job's table"
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(RuntimeError, match="DELTA_TABLE_NOT_FOUND"):  # any other write: a missing table is an error
        t._retry_on_conflict("attempts", create)
    assert len(calls) == 1
