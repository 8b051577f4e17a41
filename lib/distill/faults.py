"""Crash points for fault-injection tests: `DISTILL_CRASH_AT=<point>[:<n>]` makes the process die
(exit 137, like SIGKILL, no cleanup) the n-th time (default 1st) it reaches `crash_point(<point>)`.
Unset, a crash point costs one dictionary lookup.

`task_crash_point(<point>)` is the same inside a Spark task, but fires only on the task's first attempt:
the Python worker dies, Spark retries the task (given spark.task.maxFailures > 1, e.g. master local[2,2]),
and the retry runs through."""

from __future__ import annotations

import os

_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("DISTILL_CRASH_AT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        os._exit(137)


def task_crash_point(name: str) -> None:
    spec = os.environ.get("DISTILL_CRASH_AT")
    if not spec or spec.partition(":")[0] != name:
        return
    from pyspark import TaskContext

    task = TaskContext.get()
    if task is not None and task.attemptNumber() == 0:
        crash_point(name)
