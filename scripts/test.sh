#!/usr/bin/env bash
# The test command: set up .venv on first use, then run the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"` for the quick loop.
#
# Two pytest-xdist processes share the tests, a module at a time (a module's fixtures are made once). Most
# tests wait on a JVM, a Delta commit or a child process rather than compute: one process alone leaves a
# 2-core machine mostly idle. They take the modules in collection order (--no-loadscope-reorder), in which
# tests/conftest.py puts the readers of the shared sample run last: it runs in the background meanwhile.
# DISTILL_TEST_WORKERS=0 runs them all in this process (e.g. under a debugger).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -n "${DISTILL_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
