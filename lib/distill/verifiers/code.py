"""Code verifier: run the last code block of a response's answer against the row's tests, in the sandbox.

A row carries `response` and `test_cases` = {"language": "python" | "cpp", "tests": [...]}, where a test is
{"type": "stdio", "input", "output"} (the program reads input on stdin, its stdout must match output up
to trailing whitespace on each line, trailing blank lines and CRLF), {"type": "assert", "code"} (Python
only: the solution followed by the assert code must exit 0) or {"type": "functional", "fn_name", "input",
"output"} (Python only, LiveCodeBench's call-based tests: each line of `input` is one JSON argument,
`Solution().fn_name(*args)` is called, or the top-level function `fn_name` when the code defines no
`Solution`, and the result must equal the JSON `output`, tuples read as lists). The score is the fraction of
the first `max_tests` tests that pass.

Functional tests run the solution under a harness in the same sandboxed process. The solution is executed
as a module (not `__main__`, so its own test driver stays quiet) after the imports LiveCodeBench's runner
puts in front of every solution (`from typing import *`, collections, heapq, ...): starter code uses
`List[int]` unimported, and a correct solution must not fail on that. The harness writes the result's JSON
on the line after a random marker, straight to file descriptor 1 and after everything the solution
printed, then exits at once; the parent reads the line after the last marker and compares it there, so
junk printed by the solution, a replaced sys.stdout or an object with a lying `__eq__` cannot pass a test.
A solution that sets out to forge the marker line can (it runs in the harness's process, as a solution that
calls os._exit(0) passes assert tests): this is a verifier for model answers, not an anti-cheat.

Default per-test limits (DEFAULT_LIMITS) are contest-style and the same for every test type: 4 CPU
seconds, 8 wall seconds, 1 GiB of address space.

Statuses: a compile error or a crash is a wrong answer (ok, score 0); a row whose every test ran out of
time is `timeout`; a sandbox failure is `infra_error`, never a wrong answer; a row without tests is
`no_verifier`; a response without an answer or without a code block in it is `parse_error`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import signal
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from distill.response import answer_part, last_code_block
from distill.verifiers.base import INFRA_ERROR, NO_VERIFIER, OK, PARSE_ERROR, TIMEOUT, VerifyResult, failed
from distill.verifiers.sandbox import SandboxLimits, SandboxResult, run_sandboxed, sandboxed_python

VERSION = "2"  # 2: functional tests are run (they were errors in 1)
LANGUAGES = {"python": "python", "python3": "python", "py": "python",
             "cpp": "cpp", "c++": "cpp", "cc": "cpp", "cxx": "cpp"}
# Contest-style limits: a test is a small program on a small input.
DEFAULT_LIMITS = SandboxLimits(cpu_s=4, wall_s=8, memory_bytes=1 << 30, max_procs=32, max_file_bytes=16 << 20,
                               max_output_bytes=1 << 20, scratch_bytes=64 << 20)
# cc1plus on <bits/stdc++.h> wants a few hundred MB; the binary comes back base64-encoded on stdout.
COMPILE_LIMITS = SandboxLimits(cpu_s=30, wall_s=45, memory_bytes=2 << 30, max_procs=32, max_file_bytes=64 << 20,
                               max_output_bytes=96 << 20, scratch_bytes=256 << 20)
TRIM = 300
# What LiveCodeBench's runner puts in front of every solution: its starter code uses List[int] and friends
# unimported, and solutions lean on these names.
FUNCTIONAL_PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\n"
    "from statistics import *\nfrom itertools import *\nfrom functools import *\nfrom operator import *\n"
    "from io import *\nfrom sys import *\nfrom json import *\nfrom builtins import *\nfrom typing import *\n"
    "import string\nimport re\nimport datetime\nimport collections\nimport heapq\nimport bisect\n"
    "import copy\nimport math\nimport random\nimport statistics\nimport itertools\nimport functools\n"
    "import operator\nimport io\nimport sys\nimport json\nsys.setrecursionlimit(50000)\n"
)
# Runs solution.py as a module, calls the function on case.json's arguments and writes {"value": result} as
# JSON on the line after the marker, to fd 1 (sys.stdout may have been replaced), then leaves before any
# atexit hook or finalizer of the solution can print after it.
FUNCTIONAL_HARNESS = """\
import json
import os
import sys


def _emit(payload):
    for stream in (sys.stdout, sys.__stdout__):
        try:
            stream.flush()
        except Exception:
            pass
    data = ("\\n" + _CASE["mark"] + "\\n" + payload + "\\n").encode()
    while data:
        data = data[os.write(1, data):]
    os._exit(0)


with open("case.json", encoding="utf-8") as _f:
    _CASE = json.load(_f)
with open("solution.py", encoding="utf-8") as _f:
    _SOURCE = _f.read()
_ns = {"__name__": "solution", "__builtins__": __builtins__}
exec(PRELUDE, _ns)
exec(compile(_SOURCE, "solution.py", "exec"), _ns)
_name = _CASE["fn_name"]
if isinstance(_ns.get("Solution"), type):
    _target = getattr(_ns["Solution"](), _name)
elif callable(_ns.get(_name)):
    _target = _ns[_name]
else:
    raise NameError(f"the code defines neither class Solution nor a function {_name!r}")
_result = _target(*_CASE["args"])
try:
    _payload = json.dumps({"value": _result})
except Exception:
    try:
        _payload = json.dumps({"unserializable": type(_result).__name__ + ": " + repr(_result)[:200]})
    except Exception:
        _payload = json.dumps({"unserializable": type(_result).__name__})
_emit(_payload)
""".replace("PRELUDE", repr(FUNCTIONAL_PRELUDE))


def _trim(text: str | None, limit: int = TRIM) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 15] + f"… [{len(text)} chars]"


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return _trim(lines[-1]) if lines else ""


def normalize_output(text: str | None) -> list[str]:
    """Lines of program output, as compared: CRLF → LF, trailing spaces and trailing blank lines dropped."""
    lines = [line.rstrip() for line in (text or "").replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _as_dict(value: Any) -> Mapping | None:
    """test_cases / a test as a mapping: a dict, a JSON string, or a Spark Row."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if hasattr(value, "asDict"):
        value = value.asDict(recursive=True)
    return value if isinstance(value, Mapping) else None


def _outcome(res: SandboxResult) -> dict | None:
    """The outcome of a run that did not finish normally, or None when it exited (any code)."""
    if res.timed_out:
        return {"status": "timeout"}
    if res.output_truncated:
        return {"status": "error", "reason": "output_limit"}
    if res.signal is not None:
        try:
            name = signal.Signals(res.signal).name
        except ValueError:
            name = str(res.signal)
        return {"status": "error", "reason": f"killed by {name}", "stderr": _last_line(res.stderr)}
    return None


def functional_case(test: Mapping) -> tuple[dict, Any] | str:
    """({"fn_name", "args"} for the harness, the expected value) of a functional test, or what is wrong with it.

    Each non-blank line of `input` is one JSON argument. The result is compared after a JSON round trip, so a
    tuple reads as a list, at any depth (LiveCodeBench turns a returned tuple into a list before comparing)."""
    fn_name, given, output = test.get("fn_name"), test.get("input"), test.get("output")
    if not isinstance(fn_name, str) or not fn_name.isidentifier():
        return f"fn_name {fn_name!r} is not a Python name"
    if not isinstance(given, str) or not isinstance(output, str):
        return "input and output must be strings"
    try:
        args = [json.loads(line) for line in given.split("\n") if line.strip()]
    except ValueError as err:
        return f"input is not one JSON value per line ({err})"
    try:
        expected = json.loads(output)
    except ValueError as err:
        return f"output is not JSON ({err})"
    return {"fn_name": fn_name, "args": args}, expected


class CodeVerifier:
    name = "code"
    version = VERSION

    def __init__(self, max_tests: int = 10, limits: SandboxLimits | None = None, compile_timeout_s: float = 30.0,
                 workers: int | None = None, python: Sequence[str] | None = None,
                 cxx: Sequence[str] = ("g++", "-O2", "-std=c++17")):
        self.max_tests = max_tests
        self.limits = limits or DEFAULT_LIMITS
        self.compile_limits = replace(COMPILE_LIMITS, cpu_s=compile_timeout_s, wall_s=compile_timeout_s * 1.5)
        self.workers = workers or os.cpu_count() or 1
        # -S: tests use the standard library only, and skipping site makes each run ~3x cheaper to start.
        self.python = list(python or sandboxed_python())
        self.cxx = list(cxx)

    def verify_many(self, rows: Sequence[dict]) -> list[VerifyResult]:
        if self.workers <= 1 or len(rows) <= 1:
            return [self.verify_one(row) for row in rows]
        # Sandbox runs are subprocesses: threads overlap them without holding the GIL.
        with ThreadPoolExecutor(min(self.workers, len(rows))) as pool:
            return list(pool.map(self.verify_one, rows))

    def verify_one(self, row: Mapping) -> VerifyResult:
        try:
            return self._verify(row)
        except Exception as e:  # a verifier never raises for a row; a bug here must not read as a wrong answer
            return failed(self, INFRA_ERROR, reason="verifier_error", error=_trim(f"{type(e).__name__}: {e}"))

    def _verify(self, row: Mapping) -> VerifyResult:
        cases = _as_dict(row.get("test_cases")) or {}
        tests = [t for t in (_as_dict(t) for t in (cases.get("tests") or [])) if t is not None]
        if not tests:
            return failed(self, NO_VERIFIER, reason="no_test_cases")
        answer = answer_part(row.get("response"))
        if answer is None:
            return failed(self, PARSE_ERROR, reason="no_answer")
        block = last_code_block(answer)
        if block is None:
            return failed(self, PARSE_ERROR, reason="no_code_block")
        tag, code = block
        if not code.strip():
            return failed(self, PARSE_ERROR, reason="empty_code_block")
        language = LANGUAGES.get(str(cases.get("language") or tag or "").strip().lower())
        if language is None:
            return failed(self, NO_VERIFIER, reason="unsupported_language",
                          language=_trim(str(cases.get("language") or tag), 40))
        run = tests[: self.max_tests]
        detail: dict[str, Any] = {"language": language, "passed": 0, "total": len(run), "available": len(tests)}
        if language == "python":
            outcomes = self._run_python(code, run)
        else:
            compiled = self._compile_cpp(code)
            if isinstance(compiled, VerifyResult):
                return compiled
            if isinstance(compiled, str):
                detail.update(compile_error=compiled, tests=[])
                return VerifyResult(0.0, OK, self.name, self.version, detail)
            outcomes = self._run_binary(compiled, run)
        if isinstance(outcomes, VerifyResult):
            return outcomes
        passed = sum(o["status"] == "pass" for o in outcomes)
        detail.update(passed=passed, tests=outcomes)
        if all(o["status"] == "timeout" for o in outcomes):
            return VerifyResult(0.0, TIMEOUT, self.name, self.version, detail)
        return VerifyResult(passed / len(outcomes), OK, self.name, self.version, detail)

    def _infra(self, res: SandboxResult) -> VerifyResult:
        return failed(self, INFRA_ERROR, reason="sandbox_error", error=_trim(res.error))

    def _run_python(self, code: str, tests: list[Mapping]) -> list[dict] | VerifyResult:
        outcomes = []
        for test in tests:
            kind = test.get("type") or ("assert" if test.get("code") is not None else "stdio")
            if kind == "assert":
                program = f"{code}\n\n{test.get('code') or ''}\n"
                res = run_sandboxed([*self.python, "main.py"], {"main.py": program}, b"", self.limits)
                if res.error:
                    return self._infra(res)
                outcomes.append(self._judge_assert(res))
            elif kind == "stdio":
                res = run_sandboxed([*self.python, "main.py"], {"main.py": code}, test.get("input") or "",
                                    self.limits)
                if res.error:
                    return self._infra(res)
                outcomes.append(self._judge_stdio(res, test.get("output")))
            elif kind == "functional":
                case = functional_case(test)
                if isinstance(case, str):
                    outcomes.append({"status": "error", "reason": _trim(f"bad_test: {case}", 120)})
                    continue
                call, expected = case
                # A fresh marker per run: nothing the solution prints by chance can look like the result line.
                mark = f"--distill-result-{secrets.token_hex(16)}--"
                files = {"harness.py": FUNCTIONAL_HARNESS, "solution.py": code,
                         "case.json": json.dumps({**call, "mark": mark})}
                res = run_sandboxed([*self.python, "harness.py"], files, b"", self.limits)
                if res.error:
                    return self._infra(res)
                outcomes.append(self._judge_functional(res, mark, expected, test.get("output")))
            else:
                outcomes.append({"status": "error", "reason": _trim(f"unsupported test type {kind!r}", 80)})
        return outcomes

    def _compile_cpp(self, code: str) -> bytes | str | VerifyResult:
        """The binary, or the compiler's complaint (a wrong answer), or a result that ends the row."""
        script = f"{shlex.join([*self.cxx, '-o', 'main', 'main.cpp'])} 1>&2 && base64 -w0 main"
        res = run_sandboxed(["/bin/sh", "-c", script], {"main.cpp": code}, b"", self.compile_limits)
        if res.error:
            return self._infra(res)
        if res.timed_out:
            return failed(self, TIMEOUT, reason="compile_timeout")
        if res.returncode != 0 or res.output_truncated:
            return _trim(res.stderr.strip() or f"compiler exit {res.returncode}, signal {res.signal}", 600)
        try:
            return base64.b64decode(res.stdout, validate=True)
        except ValueError:
            return failed(self, INFRA_ERROR, reason="sandbox_error", error="the compiled binary came back garbled")

    def _run_binary(self, binary: bytes, tests: list[Mapping]) -> list[dict] | VerifyResult:
        outcomes = []
        for test in tests:
            kind = test.get("type") or ("assert" if test.get("code") is not None else "stdio")
            if kind != "stdio":
                outcomes.append({"status": "error", "reason": f"{kind} tests are not supported for C++"})
                continue
            res = run_sandboxed(["./main"], {"main": binary}, test.get("input") or "", self.limits)
            if res.error:
                return self._infra(res)
            outcomes.append(self._judge_stdio(res, test.get("output")))
        return outcomes

    @staticmethod
    def _judge_stdio(res: SandboxResult, expected: str | None) -> dict:
        bad = _outcome(res)
        if bad:
            return bad
        if res.returncode != 0:
            return {"status": "error", "reason": f"exit {res.returncode}", "stderr": _last_line(res.stderr)}
        if normalize_output(res.stdout) == normalize_output(expected):
            return {"status": "pass"}
        return {"status": "fail", "reason": "wrong_output", "expected": _trim(expected, 120),
                "got": _trim(res.stdout, 120)}

    @staticmethod
    def _judge_functional(res: SandboxResult, mark: str, expected: Any, output: str) -> dict:
        bad = _outcome(res)
        if bad:
            return bad
        if res.returncode != 0:
            return {"status": "error", "reason": f"exit {res.returncode}", "stderr": _last_line(res.stderr)}
        at = res.stdout.rfind(f"\n{mark}\n")
        try:
            payload = json.loads(res.stdout[at + len(mark) + 2 :].split("\n", 1)[0]) if at >= 0 else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return {"status": "error", "reason": "no_result", "stdout": _last_line(res.stdout)}
        if "value" in payload and payload["value"] == expected:
            return {"status": "pass"}
        got = json.dumps(payload["value"]) if "value" in payload else str(payload.get("unserializable"))
        return {"status": "fail", "reason": "wrong_output", "expected": _trim(output, 120), "got": _trim(got, 120)}

    @staticmethod
    def _judge_assert(res: SandboxResult) -> dict:
        bad = _outcome(res)
        if bad:
            return bad
        if res.returncode == 0:
            return {"status": "pass"}
        last = _last_line(res.stderr)
        if last.startswith("AssertionError"):
            return {"status": "fail", "reason": "assertion_failed", "stderr": last}
        return {"status": "error", "reason": f"exit {res.returncode}", "stderr": last}
