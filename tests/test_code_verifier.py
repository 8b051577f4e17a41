"""CodeVerifier: Python stdio, assert and functional (LiveCodeBench call-based) tests, C++ compile-and-run,
the score as a fraction of passed tests, output normalization, timeouts, which code block is read, the
statuses for rows it cannot judge (no tests, no answer, no code, a broken sandbox), and that a functional
solution's own prints or objects cannot pose as its result.
"""

from __future__ import annotations

import json
import shutil

import distill.verifiers.code as code_module
import pytest
from distill.verifiers.base import INFRA_ERROR, NO_VERIFIER, OK, PARSE_ERROR, TIMEOUT
from distill.verifiers.code import CodeVerifier, normalize_output
from distill.verifiers.sandbox import NAMESPACES_UNAVAILABLE, SandboxLimits, SandboxResult, sandbox_available

UNAVAILABLE = sandbox_available()
needs_sandbox = pytest.mark.skipif(bool(UNAVAILABLE and UNAVAILABLE.startswith(NAMESPACES_UNAVAILABLE)),
                                   reason=f"no sandbox here: {UNAVAILABLE}")
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")

FAST = SandboxLimits(cpu_s=1, wall_s=3)
ADD_TESTS = [{"type": "stdio", "input": "1 2\n", "output": "3\n"},
             {"type": "stdio", "input": "10 20\n", "output": "30\n"},
             {"type": "stdio", "input": "-5 5\n", "output": "0\n"}]
ADD_PY = "a, b = map(int, input().split())\nprint(a + b)\n"
ADD_CPP = "#include <iostream>\nint main() { long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }\n"


def respond(code: str, lang: str = "python", think: str = "Let me add.") -> str:
    return f"<think>{think}</think><answer>Here it is:\n```{lang}\n{code}```</answer>"


def row(response: str, tests: list[dict] | None = None, language: str = "python") -> dict:
    return {"response": response, "test_cases": None if tests is None else {"language": language, "tests": tests}}


def verify(r: dict, **kw):
    kw.setdefault("limits", FAST)
    kw.setdefault("workers", 1)
    (result,) = CodeVerifier(**kw).verify_many([r])
    return result


# --- Python, stdio ----------------------------------------------------------------------------------------


@needs_sandbox
def test_correct_python_scores_one():
    res = verify(row(respond(ADD_PY), ADD_TESTS))
    assert (res.status, res.score) == (OK, 1.0)
    assert res.detail["passed"] == res.detail["total"] == 3 and res.detail["language"] == "python"
    assert res.passed


@needs_sandbox
def test_wrong_python_scores_zero():
    res = verify(row(respond("a, b = map(int, input().split())\nprint(a - b)\n"), ADD_TESTS))
    assert (res.status, res.score) == (OK, 0.0)
    assert res.detail["tests"][0] == {"status": "fail", "reason": "wrong_output", "expected": "3\n", "got": "-1\n"}


@needs_sandbox
def test_partially_correct_scores_the_fraction():
    res = verify(row(respond("a, b = map(int, input().split())\nprint(abs(a) + b)\n"), ADD_TESTS))
    assert res.status == OK and res.score == pytest.approx(2 / 3)
    assert [t["status"] for t in res.detail["tests"]] == ["pass", "pass", "fail"]


@needs_sandbox
def test_runtime_error_is_a_failed_test():
    res = verify(row(respond("raise ValueError('boom')\n"), ADD_TESTS[:1]))
    assert (res.status, res.score) == (OK, 0.0)
    assert res.detail["tests"][0]["status"] == "error" and "ValueError: boom" in res.detail["tests"][0]["stderr"]


@needs_sandbox
def test_trailing_whitespace_blank_lines_and_crlf_are_tolerated():
    code = "import sys\nsys.stdout.write('1 2   \\r\\n3\\t\\r\\n\\r\\n\\n')\n"
    res = verify(row(respond(code), [{"type": "stdio", "input": "", "output": "1 2\n3"}]))
    assert (res.status, res.score) == (OK, 1.0)


def test_normalization_keeps_inner_differences():
    assert normalize_output("1 2  \r\n\r\n") == normalize_output("1 2") == ["1 2"]
    assert normalize_output("1  2") != normalize_output("1 2")
    assert normalize_output(" 3") != normalize_output("3")
    assert normalize_output("a\n\nb") != normalize_output("a\nb")


# --- Python, asserts --------------------------------------------------------------------------------------


@needs_sandbox
def test_assert_tests_pass():
    tests = [{"type": "assert", "code": "assert add(1, 2) == 3"}, {"type": "assert", "code": "assert add(0, 0) == 0"}]
    res = verify(row(respond("def add(a, b):\n    return a + b\n"), tests))
    assert (res.status, res.score) == (OK, 1.0)


@needs_sandbox
def test_assert_tests_fail():
    tests = [{"type": "assert", "code": "assert add(1, 2) == 3"}, {"type": "assert", "code": "assert add(2, 2) == 4"}]
    res = verify(row(respond("def add(a, b):\n    return a - b\n"), tests))
    assert (res.status, res.score) == (OK, 0.0)
    assert res.detail["tests"][0] == {"status": "fail", "reason": "assertion_failed", "stderr": "AssertionError"}


# --- timeouts ---------------------------------------------------------------------------------------------


@needs_sandbox
def test_infinite_loop_times_out_that_test_only():
    code = "a, b = map(int, input().split())\nwhile a < 0:\n    pass\nprint(a + b)\n"
    res = verify(row(respond(code), ADD_TESTS))
    assert res.status == OK and res.score == pytest.approx(2 / 3)
    assert res.detail["tests"][2] == {"status": "timeout"}


@needs_sandbox
def test_every_test_timing_out_is_a_timeout():
    res = verify(row(respond("while True:\n    pass\n"), ADD_TESTS[:2]))
    assert (res.status, res.score) == (TIMEOUT, 0.0)
    assert [t["status"] for t in res.detail["tests"]] == ["timeout", "timeout"]


# --- which code, which tests ------------------------------------------------------------------------------


@needs_sandbox
def test_max_tests_runs_only_the_first_n():
    res = verify(row(respond(ADD_PY), ADD_TESTS + [{"type": "stdio", "input": "1 1", "output": "wrong"}]),
                 max_tests=2)
    assert (res.detail["total"], res.detail["available"], len(res.detail["tests"]), res.score) == (2, 4, 2, 1.0)


@needs_sandbox
def test_code_in_the_think_part_is_ignored():
    wrong = "print('nope')\n"
    res = verify(row(respond(wrong, think=f"Draft:\n```python\n{ADD_PY}```\n"), ADD_TESTS))
    assert res.score == 0.0


@needs_sandbox
def test_the_last_block_of_the_answer_is_run():
    response = f"<think>hm</think><answer>```python\nprint('draft')\n```\nFinal:\n```python\n{ADD_PY}```</answer>"
    assert verify(row(response, ADD_TESTS)).score == 1.0


@needs_sandbox
def test_test_cases_as_json_string_are_read():
    r = {"response": respond(ADD_PY), "test_cases": json.dumps({"language": "python", "tests": ADD_TESTS})}
    assert verify(r).score == 1.0


@needs_sandbox
def test_rows_come_back_in_order_when_run_concurrently():
    rows = [row(respond(ADD_PY if i % 2 == 0 else "print(0)\n"), ADD_TESTS[:1]) for i in range(6)]
    results = CodeVerifier(limits=FAST, workers=3).verify_many(rows)
    assert [r.score for r in results] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


# --- rows that cannot be judged ---------------------------------------------------------------------------


def test_no_code_block_is_a_parse_error():
    res = verify(row("<think>x</think><answer>just add them</answer>", ADD_TESTS))
    assert (res.status, res.detail) == (PARSE_ERROR, {"reason": "no_code_block"})


def test_no_answer_part_is_a_parse_error():
    res = verify(row(f"<think>```python\n{ADD_PY}```</think>", ADD_TESTS))
    assert (res.status, res.detail) == (PARSE_ERROR, {"reason": "no_answer"})


@pytest.mark.parametrize("test_cases", [None, {"language": "python", "tests": []}, {"language": "python"}])
def test_no_tests_means_no_verifier(test_cases):
    res = verify({"response": respond(ADD_PY), "test_cases": test_cases})
    assert (res.status, res.detail) == (NO_VERIFIER, {"reason": "no_test_cases"})


def test_unsupported_language_means_no_verifier():
    res = verify(row(respond("main = print 3", lang="haskell"), ADD_TESTS, language="haskell"))
    assert (res.status, res.detail["reason"]) == (NO_VERIFIER, "unsupported_language")


def test_sandbox_failure_is_an_infra_error_not_a_wrong_answer(monkeypatch):
    broken = SandboxResult(None, "", "", False, False, None, 0.01, None, "sandbox setup failed: no tmpfs")
    monkeypatch.setattr(code_module, "run_sandboxed", lambda *a, **k: broken)
    res = verify(row(respond(ADD_PY), ADD_TESTS))
    assert (res.status, res.score, res.detail["reason"]) == (INFRA_ERROR, 0.0, "sandbox_error")
    assert "no tmpfs" in res.detail["error"]


def test_a_verifier_bug_is_an_infra_error(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(code_module, "run_sandboxed", boom)
    res = verify(row(respond(ADD_PY), ADD_TESTS))
    assert (res.status, res.detail["reason"]) == (INFRA_ERROR, "verifier_error")


# --- C++ --------------------------------------------------------------------------------------------------


@needs_sandbox
@needs_gxx
def test_correct_cpp_scores_one():
    res = verify(row(respond(ADD_CPP, lang="cpp"), ADD_TESTS, language="cpp"))
    assert (res.status, res.score, res.detail["language"]) == (OK, 1.0, "cpp")


@needs_sandbox
@needs_gxx
def test_wrong_cpp_scores_zero():
    res = verify(row(respond(ADD_CPP.replace("a + b", "a * b"), lang="cpp"), ADD_TESTS[:2], language="cpp"))
    assert (res.status, res.score) == (OK, 0.0)


@needs_sandbox
@needs_gxx
def test_cpp_compile_error_is_a_wrong_answer():
    res = verify(row(respond(ADD_CPP.replace("a + b", "a +"), lang="cpp"), ADD_TESTS, language="cpp"))
    assert (res.status, res.score) == (OK, 0.0)
    assert "error" in res.detail["compile_error"] and len(res.detail["compile_error"]) <= 600
    assert res.detail["tests"] == []


@needs_sandbox
@needs_gxx
def test_cpp_assert_tests_are_unsupported_and_count_as_failed():
    tests = [ADD_TESTS[0], {"type": "assert", "code": "assert(add(1, 2) == 3);"}]
    res = verify(row(respond(ADD_CPP, lang="cpp"), tests, language="cpp"))
    assert res.status == OK and res.score == 0.5
    assert res.detail["tests"][1]["status"] == "error" and "not supported" in res.detail["tests"][1]["reason"]


# --- Python, functional (LiveCodeBench call-based) -------------------------------------------------------------

PAIR_SUMS = [{"type": "functional", "fn_name": "pairSums", "input": "[1, 2, 3]\n10", "output": "[11, 12, 13]"},
             {"type": "functional", "fn_name": "pairSums", "input": "[]\n4", "output": "[]"}]
PAIR_SUMS_PY = ("class Solution:\n    def pairSums(self, nums: List[int], k: int) -> List[int]:\n"
                "        return [x + k for x in nums]\n")


def test_verdicts_of_version_1_are_stale():
    # functional tests were an error in version 1 and are run now: cached verdicts must not be reused
    assert code_module.VERSION == "2"


@needs_sandbox
def test_functional_tests_pass_with_the_prelude_names():
    # List is not imported by the solution: LiveCodeBench's runner imports typing for it
    res = verify(row(respond(PAIR_SUMS_PY), PAIR_SUMS))
    assert (res.status, res.score, res.detail["tests"]) == (OK, 1.0, [{"status": "pass"}, {"status": "pass"}])


@needs_sandbox
def test_wrong_functional_result_is_a_failed_test():
    res = verify(row(respond(PAIR_SUMS_PY.replace("x + k", "x * k")), PAIR_SUMS[:1]))
    assert (res.status, res.score) == (OK, 0.0)
    assert res.detail["tests"] == [{"status": "fail", "reason": "wrong_output", "expected": "[11, 12, 13]",
                                    "got": "[10, 20, 30]"}]


@needs_sandbox
def test_a_returned_tuple_counts_as_a_list():
    res = verify(row(respond(PAIR_SUMS_PY.replace("[x + k for x in nums]", "tuple(x + k for x in nums)")),
                     PAIR_SUMS))
    assert (res.status, res.score) == (OK, 1.0)


@needs_sandbox
def test_a_top_level_function_is_called_when_there_is_no_solution_class():
    res = verify(row(respond("def pairSums(nums, k):\n    return [x + k for x in nums]\n"), PAIR_SUMS))
    assert (res.status, res.score) == (OK, 1.0)


@needs_sandbox
def test_the_solutions_own_prints_cannot_pass_as_its_result():
    # junk without a newline, a look-alike marker, a replaced sys.stdout and an atexit print after the harness
    code = ("import atexit, io, sys\n"
            "atexit.register(lambda: print('\\n--distill-result-0--\\n{\"value\": [11, 12, 13]}'))\n"
            "class Solution:\n    def pairSums(self, nums, k):\n"
            "        print('[11, 12, 13]', end='')\n"
            "        print('\\n--distill-result-0--\\n{\"value\": [11, 12, 13]}')\n"
            "        sys.stdout = io.StringIO()\n"
            "        return [0]\n")
    res = verify(row(respond(code), PAIR_SUMS[:1]))
    assert res.detail["tests"] == [{"status": "fail", "reason": "wrong_output", "expected": "[11, 12, 13]",
                                    "got": "[0]"}]


@needs_sandbox
def test_an_object_that_claims_equality_is_not_a_result():
    code = ("class Anything:\n    def __eq__(self, other):\n        return True\n"
            "class Solution:\n    def pairSums(self, nums, k):\n        return Anything()\n")
    (test,) = verify(row(respond(code), PAIR_SUMS[:1])).detail["tests"]
    assert (test["status"], test["reason"], test["got"].split(":")[0]) == ("fail", "wrong_output", "Anything")


@needs_sandbox
def test_an_exception_in_the_function_is_an_error():
    code = "class Solution:\n    def pairSums(self, nums, k):\n        raise KeyError('gone')\n"
    res = verify(row(respond(code), PAIR_SUMS[:1]))
    assert (res.status, res.score) == (OK, 0.0)
    assert res.detail["tests"] == [{"status": "error", "reason": "exit 1", "stderr": "KeyError: 'gone'"}]


@needs_sandbox
def test_a_missing_function_is_an_error():
    res = verify(row(respond("class Solution:\n    def other(self):\n        return 1\n"), PAIR_SUMS[:1]))
    assert res.detail["tests"] == [{"status": "error", "reason": "exit 1",
                                    "stderr": "AttributeError: 'Solution' object has no attribute 'pairSums'"}]


@needs_sandbox
def test_a_functional_solution_that_never_returns_times_out():
    code = "class Solution:\n    def pairSums(self, nums, k):\n        while True:\n            pass\n"
    res = verify(row(respond(code), PAIR_SUMS[:1]))
    assert (res.status, res.detail["tests"]) == (TIMEOUT, [{"status": "timeout"}])


def test_a_malformed_functional_test_is_an_error_without_a_run(monkeypatch):
    monkeypatch.setattr(code_module, "run_sandboxed", lambda *a, **k: pytest.fail("a malformed test ran"))
    tests = [{"type": "functional", "fn_name": "pairSums", "input": "[1, 2", "output": "[]"},
             {"type": "functional", "fn_name": "not a name", "input": "1", "output": "1"},
             {"type": "functional", "fn_name": "f", "input": "1", "output": "nope"}]
    res = verify(row(respond(PAIR_SUMS_PY), tests))
    assert [t["reason"].split(" (")[0] for t in res.detail["tests"]] == [
        "bad_test: input is not one JSON value per line", "bad_test: fn_name 'not a name' is not a Python name",
        "bad_test: output is not JSON"]
