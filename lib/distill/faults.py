"""Crash points for fault-injection tests: `DISTILL_CRASH_AT=<point>[:<n>]` makes the process die
(exit 137, like SIGKILL, no cleanup) the n-th time (default 1st) it reaches `crash_point(<point>)`.
Unset, a crash point costs one dictionary lookup."""

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
