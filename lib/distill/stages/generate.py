"""Generate stages: pick the (query, teacher) pairs that still need an attempt, ask the teacher,
verify the attempts. DataFrame -> DataFrame; the job reads and writes the tables.

Engines and verifiers run inside `mapInPandas` tasks: each Python worker builds its engine once and
keeps it in a module cache (`distill.engines`), never on the driver.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distill.config import DEFAULT_SYSTEM_PROMPT, TeacherConfig
from distill.faults import task_crash_point
from distill.ids import stable_id

GENERATED = (
    "query_id string, teacher string, attempt int, category string, engine string, model string, seed bigint, "
    "system_prompt string, response string, finish_reason string, tokens_in int, tokens_out int, "
    "gen_seconds double, error string, verify_score double, verify_status string, verifier string, "
    "verifier_version string, verify_detail string, verify_seconds double, release_verify_score double"
)
VERIFIED = (
    "query_id string, teacher string, attempt int, verify_score double, verify_status string, verifier string, "
    "verifier_version string, verify_detail string, verify_seconds double"
)


def plain(value):
    """Arrow -> pandas gives numpy arrays for lists; verifiers and engines want plain lists and dicts."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def attempt_seed(base: int, query_id: str, teacher: str, attempt: int) -> int:
    """Deterministic per attempt (a retried task reproduces it) and different across attempts."""
    return int(stable_id(str(base), query_id, teacher, str(attempt))[:8], 16)


def system_prompt(teacher: TeacherConfig) -> str:
    return DEFAULT_SYSTEM_PROMPT if teacher.system_prompt is None else teacher.system_prompt


def conversation(prompt: str, messages: list[dict]) -> list[dict]:
    """The teacher's system prompt first; a query's own system message is kept right after it."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if not prompt:
        return messages
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": prompt + "\n\n" + messages[0]["content"]}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


# --- which pairs need work ------------------------------------------------------------------------

def pending_pairs(queries: DataFrame, attempts: DataFrame, teacher: str, max_attempts: int,
                  threshold: float | None = None) -> DataFrame:
    """Kept queries that `teacher` has not finished, with the next attempt number.

    queries: query_id, ...; attempts: query_id, teacher, attempt, accepted, verify_status, verify_score.
    A pair is finished when an attempt is accepted (with `threshold`: passed at that threshold instead of the
    stored `accepted`), when it has max_attempts attempts, or when its category
    has no verifier (another attempt would not be verified either). A pair with an attempt still waiting
    for verification (not verified yet, or an infra_error) waits: it is verified before it is regenerated.
    """
    mine = attempts.where(F.col("teacher") == teacher)
    state = mine.groupBy("query_id").agg(
        F.count("*").alias("n"), F.max("attempt").alias("last"),
        F.max(F.coalesce(F.col("accepted") if threshold is None else passed(threshold),
                         F.lit(False)).cast("int")).alias("any_accepted"),
        F.max((F.col("verify_status") == "no_verifier").cast("int")).alias("unverifiable"),
        F.max((F.col("verify_status").isNull() | (F.col("verify_status") == "infra_error")).cast("int"))
        .alias("waiting"))
    done = state.where((F.col("any_accepted") == 1) | (F.col("n") >= max_attempts) | (F.col("unverifiable") == 1)
                       | (F.col("waiting") == 1))
    return (queries.join(done.select("query_id"), "query_id", "left_anti")
            .join(state.select("query_id", "last"), "query_id", "left")
            .withColumn("attempt", (F.coalesce("last", F.lit(0)) + 1).cast("int"))
            .drop("last").withColumn("teacher", F.lit(teacher)))


def missing_samples(work: DataFrame, ledger: DataFrame, model: str) -> DataFrame:
    """Attempts 1..`samples` of every work row that `model` has not answered yet, whatever the stored ones
    scored: an evaluation asks each item a fixed number of times.

    work: query_id, samples, ...; ledger: query_id, teacher, attempt."""
    have = ledger.where(F.col("teacher") == model).select("query_id", "attempt")
    want = work.withColumn("attempt", F.explode(F.sequence(F.lit(1), F.col("samples").cast("int"))))
    return (want.join(have, ["query_id", "attempt"], "left_anti").withColumn("attempt", F.col("attempt").cast("int"))
            .withColumn("teacher", F.lit(model)))


# --- generation (and rule-based verification in the same task) --------------------------------------

VERIFY_COLUMNS = ("verify_score", "verify_status", "verifier", "verifier_version", "verify_detail", "verify_seconds")
VERIFY_INPUT = ("category", "messages", "reference_answer", "test_cases", "constraints", "response")


class VerifySpec:
    """What a task needs to build the verifiers: the VerifyConfig (as JSON), the driver's versions, the
    processes per task, and which categories are verified right after generation (those without an LLM
    judge: a judge model in the same task would evict the teacher's)."""

    def __init__(self, config_json: str, versions: dict, workers: int, inline: tuple[str, ...]):
        self.config_json, self.versions, self.workers, self.inline = config_json, versions, workers, inline

    def verifiers(self):
        from distill.config import VerifyConfig, build_section
        from distill.verifiers import Verifiers

        key = self.config_json + json.dumps(self.versions) + str(self.workers)
        if key not in _verifier_cache:  # one per Python worker: the math pool and judge engine stay up
            _verifier_cache.clear()
            _verifier_cache[key] = Verifiers(build_section(VerifyConfig, json.loads(self.config_json), "verify"),
                                             workers=self.workers, stamp=self.versions)
        return _verifier_cache[key]


_verifier_cache: dict[str, object] = {}


def verify_columns(spec: VerifySpec, rows: list[dict | None]) -> dict[str, list]:
    """VERIFY_COLUMNS for `rows` (None: not verified here, all columns null)."""
    import time

    todo = [i for i, r in enumerate(rows) if r is not None]
    out = {c: [None] * len(rows) for c in VERIFY_COLUMNS}
    if not todo:
        return out
    start = time.perf_counter()
    results = spec.verifiers().verify_rows([rows[i] for i in todo])
    share = (time.perf_counter() - start) / len(todo)
    for i, r in zip(todo, results, strict=True):
        for column, value in (("verify_score", r.score), ("verify_status", r.status), ("verifier", r.verifier),
                              ("verifier_version", r.verifier_version), ("verify_seconds", share),
                              ("verify_detail", json.dumps(r.detail, ensure_ascii=False, default=str))):
            out[column][i] = value
    return out


def generate(pairs: DataFrame, teacher: TeacherConfig, batch_size: int, partitions: int,
             verify: VerifySpec, counter=None) -> DataFrame:
    """pairs: query_id, source_id, category, messages, reference_answer, test_cases, constraints, attempt ->
    GENERATED rows. Rows of `verify.inline` categories come back verified; the rest have null verify columns.
    release_verify_score is a replayed release's own score (Completion.release_score), null for other engines.
    `error` is set when the engine could not answer: such rows are counted, not stored, and asked again.
    counter: an optional Spark accumulator that gets the number of requests answered (RunRecorder.watch)."""
    from distill.engines import for_tasks

    # the task opens the model by its driver-resolved path; `attempts.model` keeps the configured name
    spec, model = json.dumps(dataclasses.asdict(for_tasks(teacher))), teacher.model
    prompt = system_prompt(teacher)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from distill.config import build_section
        from distill.engines import Request, get_engine

        t = build_section(TeacherConfig, json.loads(spec), "teacher")
        for pdf in batches:
            if pdf.empty:
                continue
            engine = get_engine(t)  # here, not above: a task with nothing to do must not load a model
            for start in range(0, len(pdf), batch_size):
                chunk = pdf.iloc[start : start + batch_size]
                requests, seeds = [], []
                for row in chunk.itertuples(index=False):
                    seed = attempt_seed(t.sampling.seed, row.query_id, t.name, int(row.attempt))
                    seeds.append(seed)
                    requests.append(Request(key=f"{row.query_id}/{t.name}/{row.attempt}",
                                            messages=conversation(prompt, plain(row.messages)), seed=seed,
                                            sampling=t.sampling, query_id=row.query_id, source_id=row.source_id,
                                            attempt=int(row.attempt)))
                done = engine.generate(requests)
                rows = [{**{k: plain(getattr(row, k)) for k in VERIFY_INPUT[:-1]}, "response": c.text}
                        if c.text is not None and row.category in verify.inline else None
                        for row, c in zip(chunk.itertuples(index=False), done, strict=True)]
                yield pd.DataFrame({
                    "query_id": chunk["query_id"].values, "teacher": t.name,
                    "attempt": chunk["attempt"].astype("int32").values, "category": chunk["category"].values,
                    "engine": t.engine, "model": model, "seed": seeds, "system_prompt": prompt or None,
                    "response": [c.text for c in done], "finish_reason": [c.finish_reason for c in done],
                    "tokens_in": pd.array([c.tokens_in for c in done], dtype="Int32"),
                    "tokens_out": pd.array([c.tokens_out for c in done], dtype="Int32"),
                    "gen_seconds": [float(c.seconds) for c in done], "error": [c.error for c in done],
                    **verify_columns(verify, rows),
                    "release_verify_score": pd.array([c.release_score for c in done], dtype="Float64")})
                if counter is not None:
                    counter.add(len(chunk))
                task_crash_point("generate.task")  # a worker killed after answering: Spark retries the task

    cols = pairs.select("query_id", "source_id", *VERIFY_INPUT[:-1], "attempt")
    if partitions > 0:
        cols = cols.repartition(partitions, "query_id")
    return cols.mapInPandas(run, GENERATED)


# --- verification of stored attempts -------------------------------------------------------------------

def verify(todo: DataFrame, spec: VerifySpec, partitions: int, counter=None) -> DataFrame:
    """todo: query_id, teacher, attempt and VERIFY_INPUT -> VERIFIED rows. counter: as in `generate`."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = [{k: plain(v) for k, v in zip(VERIFY_INPUT, r, strict=True)}
                    for r in pdf[list(VERIFY_INPUT)].itertuples(index=False)]
            yield pd.DataFrame({"query_id": pdf["query_id"].values, "teacher": pdf["teacher"].values,
                                "attempt": pdf["attempt"].astype("int32").values, **verify_columns(spec, rows)})
            if counter is not None:
                counter.add(len(pdf))

    cols = todo.select("query_id", "teacher", "attempt", *VERIFY_INPUT)
    if partitions > 0:
        cols = cols.repartition(partitions, "query_id")
    return cols.mapInPandas(run, VERIFIED)


def passed(threshold: float):
    """A verified attempt that scores at least `threshold` (a Column)."""
    return (F.col("verify_status") == "ok") & (F.col("verify_score") >= F.lit(threshold))


def accepted_at(threshold: float, accept_no_verifier: bool):
    """Passed at `threshold`, or unverifiable when the config accepts that (a Column)."""
    return passed(threshold) | ((F.col("verify_status") == "no_verifier") & F.lit(accept_no_verifier))


def accepted(df: DataFrame, accept_no_verifier: bool, threshold: float) -> DataFrame:
    """Adds `accepted` (accepted_at)."""
    return df.withColumn("accepted", accepted_at(threshold, accept_no_verifier))


def stale(attempts: DataFrame, current: DataFrame, accept_no_verifier: bool) -> DataFrame:
    """Attempts whose verification is missing, failed for infrastructure reasons, is from another verifier
    version than the one now configured for their category, or is an unverifiable one whose `accepted` no
    longer matches generate.accept_no_verifier. current: category, verifier, verifier_version."""
    fresh = attempts.join(current, ["category", "verifier", "verifier_version"], "left_semi").where(
        (F.col("verify_status") != "infra_error")
        & ~((F.col("verify_status") == "no_verifier") & (F.col("accepted") != F.lit(accept_no_verifier))))
    return attempts.join(fresh.select("query_id", "teacher", "attempt"), ["query_id", "teacher", "attempt"],
                         "left_anti")
