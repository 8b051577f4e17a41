"""A job's run that would find nothing to do stops before it looks.

A run *settles* when it ends with nothing left that a re-run could do: for `generate`, every pair accepted,
out of attempts, or without an answer in an unchanged replay file, and nothing waiting for verification. Such a
run records a settled key in its `runs` row (runs.settled_key): a hash of the Delta versions, at its end, of every
table the job reads or writes, and of the config, the code and whatever else decides the job's work (`extra`:
model and benchmark file fingerprints, verifier versions, the job's options). A later run of the same job that
computes the same key stops at once: Delta versions only move forward, so the same versions are the same rows,
and with the same config and code the run would find what the settled run left, nothing to do. It costs a few
Delta log lookups and one read of `runs`, instead of the selection queries, Python workers and engines a run
needs to find that out.

    state = Settled(spark, cfg, rec, ("queries", "attempts"))  # before the job reads any of them
    if state.unchanged(extra):
        return
    ...  # the job's work
    if nothing_left:
        state.settle()

A run settles only if no other job committed to its tables while it ran (their commits could hold work it did
not see): every commit since the versions it started from must carry its own run id. A checkout with
uncommitted changes (git sha '+dirty') never settles or skips: its code may differ from the recorded run's.
"""

from __future__ import annotations

import os

import distill
from distill.ids import canonical_json, stable_id
from distill.readers import file_fingerprint
from distill.runs import git_sha


class Settled:
    def __init__(self, spark, cfg, rec, tables: tuple[str, ...]):
        from distill.tables import versions

        self.spark, self.cfg, self.rec, self.tables, self.extra = spark, cfg, rec, tuple(tables), None
        code = git_sha()
        self.code = None if code is not None and code.endswith("+dirty") else (code or "")
        self.start = versions(spark, cfg, self.tables) if self.code is not None else {}

    def _key(self, versions: dict) -> str:
        return stable_id("settled", self.rec.job, canonical_json(versions), self.cfg.to_json(), self.code,
                         distill.__version__, canonical_json(self.extra))

    def unchanged(self, extra=()) -> bool:
        """True (and a line saying so) when a succeeded run of this job settled on exactly this state. `extra`
        (JSON-able): what decides the job's work besides the tables, config and code; settle() records it too."""
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        from distill.tables import ensure_table, read_table, table_path

        self.extra = extra
        if self.code is None or not DeltaTable.isDeltaTable(self.spark, table_path(self.cfg, "runs")):
            return False
        ensure_table(self.spark, self.cfg, "runs")  # an older warehouse's `runs` gains settled_key first
        row = (read_table(self.spark, self.cfg, "runs")
               .where((F.col("settled_key") == self._key(self.start)) & (F.col("job") == self.rec.job)
                      & (F.col("status") == "succeeded")).select("run_id").first())
        if row is None:
            return False
        print(f"{self.rec.job}: nothing to do: run {row['run_id']} settled on the same tables, config and code")
        self.rec.count("settled_before", 1)
        return True

    def settle(self) -> None:
        """Record this run's end state as settled, unless another job committed to its tables meanwhile."""
        from distill.tables import commits_tagged, versions

        if self.code is None:
            return
        end = versions(self.spark, self.cfg, self.tables)
        if all(end[t] == self.start[t] or commits_tagged(self.spark, self.cfg, t, self.start[t], self.rec.run_id)
               for t in self.tables):
            self.rec.settled_key = self._key(end)


def path_fingerprint(path: str) -> str:
    """A file's or a folder's files' fingerprints (size and modification time: no byte is read); '' when absent."""
    if os.path.isdir(path):
        return canonical_json(sorted((os.path.relpath(os.path.join(d, f), path), file_fingerprint(os.path.join(d, f)))
                                     for d, _, files in os.walk(path) for f in files))
    try:
        return file_fingerprint(path)
    except OSError:
        return ""
