"""The ledger loop: ask models for what a stop rule says is still open, verify it, add it to a ledger table,
round after round. `generate` runs it until every (query, teacher) pair is accepted or out of attempts;
an evaluation runs the same loop with another stop rule, a fixed number of samples per item.

A run first verifies stored rows that need it (never verified, an infra_error, or made by an older
verifier version: re-verified, not regenerated). Then, in rounds, for every open (row, model) pair:
  1. generate the next attempt (a deterministic seed per attempt) and, in the same task, verify it by
     the rule-based verifiers (math, code, instruction following);
  2. stage the round as Parquet (so the engines run exactly once although a MERGE reads its source twice);
  3. MERGE it into the ledger keyed on its key (for `attempts`: query_id, teacher, attempt);
  4. verify the categories that need the LLM judge in a pass of their own (a judge model in the model's
     task would evict the model).
A kill at any point loses at most the round in flight; a re-run finds every stored row and never
generates it again.

The loop speaks of (query_id, teacher, attempt): the work rows' id, the model's name, the attempt number.
A ledger whose table names them otherwise maps both ways (`Ledger.to_table`, `Ledger.from_table`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from distill.config import TeacherConfig
from distill.engines import for_tasks
from distill.engines.replay import NO_RESPONSE
from distill.faults import crash_point
from distill.spark import cores_per_task, remove_path, resolve_path
from distill.stages import generate as st
from distill.tables import TABLES, ensure_table, merge_new, merge_update, read_table, stage
from distill.verifiers import Verifiers

# --- stop rules: which pairs still need an attempt ------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class UntilAccepted:
    """`generate`'s rule: the next attempt of every pair that has no accepted attempt, fewer than
    `max_attempts`, a verifier, and no attempt waiting for verification (stages.generate.pending_pairs).
    threshold: none of its attempts scores at least this (an experiment's variant); None: the stored
    `accepted`."""

    max_attempts: int
    threshold: float | None = None

    @property
    def rounds(self) -> int:
        return self.max_attempts

    def pending(self, work: DataFrame, ledger: DataFrame, model: str) -> DataFrame:
        return st.pending_pairs(work, ledger, model, self.max_attempts, self.threshold)


@dataclasses.dataclass(frozen=True)
class FixedSamples:
    """An evaluation's rule: attempts 1..`samples` (a column of the work rows) of every row, whatever they
    score (stages.generate.missing_samples). Every sample is asked in the first round; the later rounds ask
    again only for what an engine could not answer."""

    rounds: int = 3

    def pending(self, work: DataFrame, ledger: DataFrame, model: str) -> DataFrame:
        return st.missing_samples(work, ledger, model)


def _same(df: DataFrame) -> DataFrame:
    return df


@dataclasses.dataclass(frozen=True)
class Ledger:
    """The table the loop keeps its rows in, and how a row is judged.

    accept: adds `accepted` to rows that carry the verify columns (generate: score >= 0.9; an evaluation:
    correct). accept_no_verifier: whether an unverifiable row counts as accepted (a stored one whose
    `accepted` disagrees is re-decided). to_table / from_table: the loop's column names to the table's and
    back (from_table must give query_id, teacher, attempt, category, accepted and the verify columns).
    role: what the ledger's models are called in messages."""

    table: str
    accept: Callable[[DataFrame], DataFrame]
    accept_no_verifier: bool = False
    to_table: Callable[[DataFrame], DataFrame] = _same
    from_table: Callable[[DataFrame], DataFrame] = _same
    role: str = "teacher"

    def read(self, spark, cfg) -> DataFrame:
        return self.from_table(read_table(spark, cfg, self.table))


# --- the `attempts` ledger -------------------------------------------------------------------------------

def attempts_ledger(cfg) -> Ledger:
    g = cfg.generate
    return Ledger("attempts", lambda df: st.accepted(df, g.accept_no_verifier, g.threshold),
                  accept_no_verifier=g.accept_no_verifier)


def kept_queries(spark, cfg) -> DataFrame:
    """The work rows of `generate`: the kept queries."""
    return (read_table(spark, cfg, "queries").where(F.col("status") == "kept")
            .select("query_id", "source_id", "category", "messages", "reference_answer", "test_cases", "constraints"))


def pending_attempts(spark, cfg, teachers: list[str], threshold: float | None) -> dict[str, int]:
    """Per teacher, how many pairs the next round would ask (UntilAccepted at `threshold`)."""
    ensure_table(spark, cfg, "attempts")
    rule = UntilAccepted(cfg.generate.max_attempts, threshold)
    rows, work = attempts_ledger(cfg).read(spark, cfg), kept_queries(spark, cfg)
    counts = _counts(open_pairs(rule, work, rows, teachers))
    return {t: counts.get(t, 0) for t in teachers}


def open_pairs(rule, work: DataFrame, rows: DataFrame, models: list[str]) -> DataFrame:
    """What `rule` leaves open for each of `models`, in one DataFrame (its `teacher` column names the model):
    one Spark job counts and persists the pairs of every model at once, not one job per model."""
    pending = [rule.pending(work, rows, m) for m in models]
    union = pending[0]
    for p in pending[1:]:
        union = union.unionByName(p)
    return union


def _counts(pairs: DataFrame) -> dict[str, int]:
    return {r["teacher"]: r["count"] for r in pairs.groupBy("teacher").count().collect()}


def generate_attempts(spark, cfg, rec, teachers: list[TeacherConfig], threshold: float | None = None) -> bool:
    """`generate`'s loop for `teachers`: until each pair has an accepted attempt (with `threshold`: one scoring
    at least that) or is out of attempts. Stored `accepted` flags made at another generate.threshold are
    decided again first (no verification, no generation). Returns whether the run settled (run_rounds)."""
    g = cfg.generate
    ensure_table(spark, cfg, "attempts")
    _redecide(spark, cfg, rec)
    return run_rounds(spark, cfg, rec, attempts_ledger(cfg), teachers, kept_queries(spark, cfg),
                      UntilAccepted(g.max_attempts, threshold), verify_spec(spark, cfg.verify),
                      g.partitions or spark.sparkContext.defaultParallelism, g.batch_size)


def _redecide(spark, cfg, rec) -> None:
    g = cfg.generate
    rows = read_table(spark, cfg, "attempts").where(F.col("accepted").isNotNull())
    now = st.accepted_at(g.threshold, g.accept_no_verifier)
    changed = rows.where(F.col("accepted") != now).select(*TABLES["attempts"].keys, now.alias("accepted")).cache()
    n = changed.count()
    if n:
        print(f"{rec.job}: {n} attempts decided again at generate.threshold {g.threshold:g}")
        rec.wrote("attempts", merge_update(spark, cfg, "attempts", changed, ["accepted"])["version"])
    rec.count("redecided", n)
    changed.unpersist()


# --- verification ----------------------------------------------------------------------------------------

def verify_spec(spark, verify) -> st.VerifySpec:
    """What tasks need to build the verifiers of `verify` (a VerifyConfig), with the driver's versions."""
    verifiers = Verifiers(verify)
    versions = verifiers.versions()
    inline = tuple(c for c in versions if not verifiers.loads_model(c))
    if verify.judge is not None:  # the judge's model is opened in tasks too (versions keep the configured name)
        verify = dataclasses.replace(verify, judge=for_tasks(verify.judge))
    if verify.reward_model is not None:  # likewise the reward model, by the path the driver sees
        verify = dataclasses.replace(verify, reward_model=dataclasses.replace(
            verify.reward_model, model=resolve_path(verify.reward_model.model)))
    return st.VerifySpec(json.dumps(dataclasses.asdict(verify)), versions, cores_per_task(spark), inline)


def _with_acceptance(df: DataFrame, ledger: Ledger) -> DataFrame:
    """accepted and verified_at for rows that carry a verification (null for rows still waiting)."""
    verified = F.col("verify_status").isNotNull()
    return ledger.accept(df).withColumn("accepted", F.when(verified, F.col("accepted"))).withColumn(
        "verified_at", F.when(verified, F.current_timestamp()))


def verify_pending(spark, cfg, rec, ledger: Ledger, work: DataFrame, spec: st.VerifySpec) -> int:
    """Verify stored rows that need it (see stages.generate.stale); returns how many."""
    todo = _stale(spark, cfg, ledger, work, spec)
    waiting, counts = todo.count(), {}
    if waiting:  # most runs: nothing, and then no staging write either
        with rec.step("verify"), rec.watch("attempts verified", waiting) as counter:
            staged, path = stage(spark, cfg, st.verify(todo, spec, cfg.verify.partitions, counter), "verify")
            counts = {r["verify_status"]: r["count"] for r in staged.groupBy("verify_status").count().collect()}
            if counts:
                update = ledger.to_table(_with_acceptance(staged, ledger))  # keys, verify columns, accepted
                keys = TABLES[ledger.table].keys
                metrics = merge_update(spark, cfg, ledger.table, update,
                                       [c for c in update.columns if c not in keys])
                rec.wrote(ledger.table, metrics["version"])
            remove_path(spark, path)
    for status, n in counts.items():
        rec.count(f"verified.{status}", n)
    rec.count("verified", sum(counts.values()))
    return sum(counts.values())


def _stale(spark, cfg, ledger: Ledger, work: DataFrame, spec: st.VerifySpec) -> DataFrame:
    """The stored rows of `work` that need verifying (see stages.generate.stale), with the work columns."""
    current = spark.createDataFrame([(c, v, ver) for c, (v, ver) in spec.versions.items()],
                                    "category string, verifier string, verifier_version string")
    return st.stale(ledger.read(spark, cfg), current, ledger.accept_no_verifier).join(
        work.select("query_id", "messages", "reference_answer", "test_cases", "constraints"), "query_id")


# --- the loop --------------------------------------------------------------------------------------------

def run_rounds(spark, cfg, rec, ledger: Ledger, models: list[TeacherConfig], work: DataFrame, rule,
               spec: st.VerifySpec, partitions: int, batch_size: int) -> bool:
    """Rounds until `rule` leaves nothing open (or its `rounds` are used up). work: query_id, source_id,
    category, messages, reference_answer, test_cases, constraints (and what `rule` reads, e.g. samples).
    Returns whether the run settled (distill.settled): nothing open but what a replay file has no answer for
    (asking again gets none while the file is the same), no failed request, nothing waiting for verification."""
    finished: set[str] = set()
    failed = False
    ensure_table(spark, cfg, ledger.table)
    verify_pending(spark, cfg, rec, ledger, work, spec)  # left over from a crash, a new verifier version, ...
    for round_no in range(1, rule.rounds + 1):
        names = [m.name for m in models if m.name not in finished]
        if not names:
            break
        opened = open_pairs(rule, work, ledger.read(spark, cfg), names).persist()
        try:
            counts = _counts(opened)  # persisted: the round generates exactly these
            total = sum(counts.values())
            if total == 0:
                break  # nothing open for any model
            pairs = {name: opened.where(F.col("teacher") == name) for name in names if counts.get(name)}
            stats = _round(spark, cfg, rec, ledger, models, pairs, total, spec, partitions, batch_size, round_no)
        finally:
            opened.unpersist()
        failed |= _account(rec, ledger, models, stats, finished, round_no)
        print(f"{rec.job}: round {round_no}: " + ", ".join(
            f"{name} {s['ok']} new" for name, s in sorted(stats.items())))
        if any(s["unverified"] for s in stats.values()):
            verify_pending(spark, cfg, rec, ledger, work, spec)  # the judged categories
    else:
        return False  # the rounds ran out: a re-run may still find pairs open
    # an infra_error verdict (a sandbox that could not start, a judge that did not answer) is verified again
    return not failed and _stale(spark, cfg, ledger, work, spec).isEmpty()


def _round(spark, cfg, rec, ledger: Ledger, models, pairs: dict, total: int, spec, partitions: int,
           batch_size: int, round_no: int) -> dict:
    """One attempt for each open pair (pairs: model -> its pending pairs, `total` in all): generate, stage,
    add the answered ones to the ledger. Returns per-model figures (ok, errors, tokens, seconds, ...)."""
    with rec.step("generate"), rec.watch(f"round {round_no}: requests answered", total) as counter:
        outs = [st.generate(pairs[m.name], m, batch_size, partitions, spec, counter)
                for m in models if m.name in pairs]
        union = outs[0]
        for o in outs[1:]:
            union = union.unionByName(o)
        staged, path = stage(spark, cfg, union, f"{rec.job}-r{round_no}")
        stats = {r["teacher"]: r for r in staged.groupBy("teacher").agg(
            F.count("response").alias("ok"), F.count("error").alias("errors"),
            F.sum(F.when(F.col("error").startswith(NO_RESPONSE), 1).otherwise(0)).alias("missing"),
            F.first(F.when(~F.col("error").startswith(NO_RESPONSE), F.col("error")), ignorenulls=True)
            .alias("first_error"),
            F.sum((F.col("response").isNotNull() & F.col("verify_status").isNull()).cast("int"))
            .alias("unverified"),
            F.sum("tokens_in").alias("tokens_in"), F.sum("tokens_out").alias("tokens_out"),
            F.sum("gen_seconds").alias("seconds")).collect()}
        new = _with_acceptance(staged.where(F.col("error").isNull() & F.col("response").isNotNull()), ledger)
        new = new.drop("error").withColumn("run_id", F.lit(rec.run_id)).withColumn(
            "generated_at", F.current_timestamp())
        crash_point(f"{rec.job}.staged")
        if any(s["ok"] for s in stats.values()):
            metrics = merge_new(spark, cfg, ledger.table, ledger.to_table(new))
            rec.wrote(ledger.table, metrics["version"])
        remove_path(spark, path)
        crash_point(f"{rec.job}.merged")
    return stats


def _account(rec, ledger: Ledger, models, stats, finished: set, round_no: int) -> bool:
    """Per-model costs into `runs`; a model with nothing new is finished; one whose every request failed
    in the first round stops the job (an unreachable endpoint, a broken model) with the engine's own error.
    Returns whether any request failed (not counting a replay file's missing answers): asked again next run."""
    any_failed = False
    for m in models:
        s = stats.get(m.name)
        if s is None or s["ok"] == 0:
            finished.add(m.name)  # nothing open, or nothing more this engine can give now
        if s is None:
            continue
        rec.count(f"{m.name}.generated", s["ok"])
        rec.count(f"{m.name}.tokens_in", s["tokens_in"] or 0)
        rec.count(f"{m.name}.tokens_out", s["tokens_out"] or 0)
        key = f"engine_s.{m.name}"
        rec.timings[key] = round(rec.timings.get(key, 0.0) + (s["seconds"] or 0.0), 3)
        failed = s["errors"] - s["missing"]
        if failed:
            any_failed = True
            rec.count(f"{m.name}.errors", failed)
            print(f"{rec.job}: {m.name}: {failed} requests failed (asked again next run); first: "
                  f"{s['first_error']}", file=sys.stderr)
            if s["ok"] == 0 and round_no == 1:
                raise RuntimeError(f"{ledger.role} {m.name!r}: all {failed} requests failed; first error: "
                                   f"{s['first_error']}")
    return any_failed
