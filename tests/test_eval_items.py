"""Evaluation benchmark items: LiveCodeBench rows (public and pickled private tests, stdin and functional
problems) and HumanEval rows become code items that CodeVerifier scores 1.0 for a right solution and 0.0 for
a wrong one; private tests that are not a pickled str are refused without running anything; plain rows
with default and mapped fields; auto detection; the date window; errors that name the config key.

Every problem here is written for these tests, in the benchmarks' published row shapes.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distill.eval_items import (
    HUMANEVAL_INSTRUCTION,
    LCB_FUNCTIONAL_INSTRUCTION,
    LCB_STDIN_INSTRUCTION,
    EvalItem,
    EvalItemsError,
    read_eval_items,
)
from distill.verifiers.base import NO_VERIFIER, OK
from distill.verifiers.code import CodeVerifier
from distill.verifiers.sandbox import NAMESPACES_UNAVAILABLE, SandboxLimits, sandbox_available

UNAVAILABLE = sandbox_available()
needs_sandbox = pytest.mark.skipif(bool(UNAVAILABLE and UNAVAILABLE.startswith(NAMESPACES_UNAVAILABLE)),
                                   reason=f"no sandbox here: {UNAVAILABLE}")


def lcb_private(tests: list[dict]) -> str:
    """Private tests encoded as LiveCodeBench encodes them."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(tests)))).decode()


def stdin_test(given: str, output: str) -> dict:
    return {"input": given, "output": output, "testtype": "stdin"}


def functional_test(given: str, output: str) -> dict:
    return {"input": given, "output": output, "testtype": "functional"}


SUM_TESTS = [stdin_test("3\n1 2 3\n", "6\n"), stdin_test("1\n-4\n", "-4\n"), stdin_test("2\n5 5\n", "10\n")]
LCB_STDIN = {
    "question_title": "Sum the list", "question_content": "Given N and N integers, print their sum.",
    "platform": "atcoder", "question_id": "toy_sum", "contest_id": "toy1", "contest_date": "2024-11-02T00:00:00",
    "starter_code": "", "difficulty": "easy", "public_test_cases": json.dumps(SUM_TESTS[:1]),
    "private_test_cases": lcb_private(SUM_TESTS[1:]), "metadata": "{}"}
SHIFT_STARTER = "class Solution:\n    def shiftAll(self, nums: List[int], k: int) -> List[int]:\n        "
SHIFT_TESTS = [functional_test("[1, 2]\n3", "[4, 5]"), functional_test("[]\n7", "[]"),
               functional_test("[-1]\n1", "[0]")]
LCB_FUNCTIONAL = {
    "question_title": "Shift all", "question_content": "Return nums with k added to every element.",
    "platform": "leetcode", "question_id": "toy_shift", "contest_id": "toy2", "contest_date": "2025-01-11T00:00:00",
    "starter_code": SHIFT_STARTER, "difficulty": "medium", "public_test_cases": json.dumps(SHIFT_TESTS[:2]),
    "private_test_cases": lcb_private(SHIFT_TESTS[2:]), "metadata": json.dumps({"func_name": "shiftAll"})}

SUM_PY = "input()\nprint(sum(map(int, input().split())))\n"
SHIFT_PY = SHIFT_STARTER + "return [x + k for x in nums]\n"

HUMANEVAL = [
    {"task_id": "Toy/0",
     "prompt": 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b.\n'
               '    >>> add(2, 3)\n    5\n    """\n',
     "canonical_solution": "    return a + b\n",
     "test": "\n\nMETADATA = {\n    'author': 'toy',\n    'dataset': 'test'\n}\n\n\ndef check(candidate):\n"
             "    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
     "entry_point": "add"},
    {"task_id": "Toy/1",
     "prompt": "from typing import List\n\n\ndef evens(xs: List[int]) -> List[int]:\n"
               '    """Keep the even numbers of xs, in order.\n    >>> evens([1, 2, 4])\n    [2, 4]\n    """\n',
     "canonical_solution": "    return [x for x in xs if x % 2 == 0]\n",
     "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate([1, 2, 4]) == [2, 4]\n"
             "    assert candidate([]) == []\n    assert candidate([3]) == []\n",
     "entry_point": "evens"},
]

AIME = [{"ID": "Toy-I-1", "Problem": "Find the remainder when $2^{10}$ is divided by $1000$.", "Answer": 24},
        {"ID": "Toy-I-2", "Problem": "How many positive divisors does $36$ have?", "Answer": "9"}]


def write_jsonl(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def respond(code: str) -> str:
    return f"<think>Let me write it.</think><answer>```python\n{code}\n```</answer>"


def score(item: EvalItem, code: str):
    (result,) = CodeVerifier(limits=SandboxLimits(cpu_s=2, wall_s=4), workers=1).verify_many(
        [{"response": respond(code), "test_cases": item.test_cases}])
    return result.status, result.score


# --- LiveCodeBench -----------------------------------------------------------------------------------------------


def test_livecodebench_rows_become_code_items(tmp_path):
    items = read_eval_items(write_jsonl(tmp_path / "lcb.jsonl", [LCB_STDIN, LCB_FUNCTIONAL]), "code")
    assert items == [
        EvalItem("toy_sum", "code", f"Given N and N integers, print their sum.\n\n{LCB_STDIN_INSTRUCTION}", None,
                 {"language": "python", "tests": [{"type": "stdio", "input": "3\n1 2 3\n", "output": "6\n"},
                                                  {"type": "stdio", "input": "1\n-4\n", "output": "-4\n"},
                                                  {"type": "stdio", "input": "2\n5 5\n", "output": "10\n"}]},
                 "easy", "2024-11-02"),
        EvalItem("toy_shift", "code",
                 "Return nums with k added to every element.\n\n```python\nclass Solution:\n"
                 "    def shiftAll(self, nums: List[int], k: int) -> List[int]:\n```\n\n"
                 f"{LCB_FUNCTIONAL_INSTRUCTION}", None,
                 {"language": "python", "tests": [
                     {"type": "functional", "fn_name": "shiftAll", "input": "[1, 2]\n3", "output": "[4, 5]"},
                     {"type": "functional", "fn_name": "shiftAll", "input": "[]\n7", "output": "[]"},
                     {"type": "functional", "fn_name": "shiftAll", "input": "[-1]\n1", "output": "[0]"}]},
                 "medium", "2025-01-11"),
    ]


@needs_sandbox
def test_livecodebench_solutions_score_through_the_code_verifier(tmp_path):
    stdin_item, functional_item = read_eval_items(write_jsonl(tmp_path / "lcb.jsonl", [LCB_STDIN, LCB_FUNCTIONAL]),
                                                  "code")
    assert score(stdin_item, SUM_PY) == (OK, 1.0)
    assert score(stdin_item, SUM_PY.replace("print(sum(", "print(1 + sum(")) == (OK, 0.0)
    assert score(functional_item, SHIFT_PY) == (OK, 1.0)
    assert score(functional_item, SHIFT_STARTER + "return [k]\n") == (OK, 0.0)


def test_older_releases_keep_private_tests_as_plain_json(tmp_path):
    old = {**LCB_STDIN, "private_test_cases": json.dumps(SUM_TESTS[1:])}
    (new_item,) = read_eval_items(write_jsonl(tmp_path / "new.jsonl", [LCB_STDIN]), "code")
    (old_item,) = read_eval_items(write_jsonl(tmp_path / "old.jsonl", [old]), "code")
    assert old_item == new_item and len(old_item.test_cases["tests"]) == 3


class TouchFile:
    """Unpickling this runs os.system: the attack a pickled field allows."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def test_a_pickle_that_names_a_global_is_refused_and_never_runs(tmp_path):
    touched = tmp_path / "touched"
    payload = base64.b64encode(zlib.compress(pickle.dumps(TouchFile(touched)))).decode()
    (item,) = read_eval_items(write_jsonl(tmp_path / "lcb.jsonl", [{**LCB_STDIN, "private_test_cases": payload}]),
                              "code")
    assert not touched.exists()
    assert (item.item_id, item.test_cases) == ("toy_sum", None)
    assert item.bad_reason == f"private_test_cases: pickle refused: it names the global {os.system.__module__}.system"
    # a bad item has nothing to run: the verifier has no tests for it
    assert score(item, SUM_PY)[0] == NO_VERIFIER


@pytest.mark.parametrize("private, reason", [
    (base64.b64encode(zlib.compress(pickle.dumps(SUM_TESTS))).decode(),
     "private_test_cases: pickle refused: it holds list, not str"),
    (base64.b64encode(zlib.compress(pickle.dumps(b"[]"))).decode(),
     "private_test_cases: pickle refused: it holds bytes, not str"),
    (base64.b64encode(zlib.compress(pickle.dumps("not json"))).decode(),
     "private_test_cases: not JSON (Expecting value: line 1 column 1 (char 0))"),
    (base64.b64encode(b"not zlib at all").decode(), "private_test_cases: not zlib (Error -3 while decompressing data: "
                                                    "incorrect header check)"),
    (base64.b64encode(zlib.compress(pickle.dumps(json.dumps(SUM_TESTS)))[:-6]).decode(),
     "private_test_cases: not zlib (the stream is cut short)"),
    ("%%%", "private_test_cases: not base64 (Only base64 data is allowed)"),
])
def test_private_tests_that_are_not_a_pickled_json_string_make_the_item_bad(tmp_path, private, reason):
    (item,) = read_eval_items(write_jsonl(tmp_path / "lcb.jsonl", [{**LCB_STDIN, "private_test_cases": private}]),
                              "code")
    assert (item.bad_reason, item.test_cases) == (reason, None)


@pytest.mark.parametrize("change, reason", [
    ({"metadata": "{}"}, "a functional problem without metadata.func_name"),
    ({"public_test_cases": "[{"}, "public_test_cases: Expecting property name enclosed in double quotes: "
                                  "line 1 column 3 (char 2)"),
    ({"public_test_cases": "[]", "private_test_cases": ""}, "no test cases"),
    ({"public_test_cases": json.dumps([{"input": "1", "output": "2", "testtype": "interactive"}])},
     "unknown testtype 'interactive'"),
])
def test_unusable_livecodebench_rows_keep_a_reason(tmp_path, change, reason):
    (item,) = read_eval_items(write_jsonl(tmp_path / "lcb.jsonl", [{**LCB_FUNCTIONAL, **change}]), "code")
    assert (item.item_id, item.bad_reason, item.test_cases) == ("toy_shift", reason, None)


# --- HumanEval ---------------------------------------------------------------------------------------------------


def test_humaneval_rows_become_assert_items(tmp_path):
    first, _ = read_eval_items(write_jsonl(tmp_path / "he.jsonl", HUMANEVAL), "code", fmt="humaneval")
    assert first == EvalItem(
        "Toy/0", "code",
        'def add(a: int, b: int) -> int:\n    """Return the sum of a and b.\n    >>> add(2, 3)\n    5\n    """'
        f"\n\n{HUMANEVAL_INSTRUCTION}",
        test_cases={"language": "python", "tests": [{"type": "assert", "code": HUMANEVAL[0]["test"]
                                                     + "\n\ncheck(add)\n"}]})


@needs_sandbox
@pytest.mark.parametrize("index", range(len(HUMANEVAL)))
def test_humaneval_canonical_solutions_score_one_and_wrong_bodies_zero(tmp_path, index):
    row = HUMANEVAL[index]
    item = read_eval_items(write_jsonl(tmp_path / "he.jsonl", HUMANEVAL), "code")[index]
    assert score(item, row["prompt"] + row["canonical_solution"]) == (OK, 1.0)
    assert score(item, row["prompt"] + "    return None\n") == (OK, 0.0)


def test_a_humaneval_row_without_its_test_is_bad(tmp_path):
    row = {**HUMANEVAL[0], "test": ""}
    (item,) = read_eval_items(write_jsonl(tmp_path / "he.jsonl", [row]), "code", fmt="humaneval")
    assert (item.item_id, item.bad_reason, item.test_cases) == ("Toy/0", "missing test", None)


# --- plain rows, auto detection, file formats ------------------------------------------------------------------


def test_plain_rows_with_a_field_mapping(tmp_path):
    items = read_eval_items(write_jsonl(tmp_path / "aime.jsonl", AIME), "math", fmt="plain",
                            fields={"id": "ID", "prompt": "Problem", "answer": "Answer"})
    assert items == [EvalItem("Toy-I-1", "math", AIME[0]["Problem"], "24"),
                     EvalItem("Toy-I-2", "math", AIME[1]["Problem"], "9")]


def test_plain_rows_with_default_fields(tmp_path):
    rows = [{"problem": "Compute $3+4$.", "answer": "7", "level": 1, "date": "2024-03-01"},
            {"question": "Compute $2 \\cdot 5$.", "answer": "10", "difficulty": "hard"},
            {"problem": "What is $0!$?"}]
    assert read_eval_items(write_jsonl(tmp_path / "m.jsonl", rows), "math") == [
        EvalItem("1", "math", "Compute $3+4$.", "7", difficulty="1", date="2024-03-01"),
        EvalItem("2", "math", "Compute $2 \\cdot 5$.", "10", difficulty="hard"),
        EvalItem("3", "math", "What is $0!$?", bad_reason="no answer"),
    ]


def test_plain_code_rows_carry_their_test_cases(tmp_path):
    tests = {"language": "python", "tests": [{"type": "stdio", "input": "", "output": "1\n"}]}
    rows = [{"id": "p1", "prompt": "Print 1.", "tests": tests}, {"id": "p2", "prompt": "Print 2."}]
    assert read_eval_items(write_jsonl(tmp_path / "c.jsonl", rows), "code", fields={"tests": "tests"}) == [
        EvalItem("p1", "code", "Print 1.", test_cases=tests), EvalItem("p2", "code", "Print 2.",
                                                                       bad_reason="no test cases")]


def test_auto_detects_each_format(tmp_path):
    lcb = write_jsonl(tmp_path / "lcb.jsonl", [LCB_STDIN])
    he = write_jsonl(tmp_path / "he.jsonl", HUMANEVAL)
    aime = write_jsonl(tmp_path / "aime.jsonl", [{"problem": AIME[0]["Problem"], "answer": "24"}])
    assert read_eval_items(lcb, "code") == read_eval_items(lcb, "code", fmt="livecodebench")
    assert read_eval_items(he, "code") == read_eval_items(he, "code", fmt="humaneval")
    assert read_eval_items(aime, "math") == [EvalItem("1", "math", AIME[0]["Problem"], "24")]
    # the explicit format is not the detected one: a HumanEval file read as plain has no tests
    assert [i.bad_reason for i in read_eval_items(he, "code", fmt="plain")] == ["no test cases"] * 2


def test_jsonl_parquet_and_datasets_folder_give_the_same_items(tmp_path):
    import datasets

    pq.write_table(pa.Table.from_pylist([LCB_STDIN, LCB_FUNCTIONAL]), tmp_path / "lcb.parquet")
    datasets.Dataset.from_list([LCB_STDIN, LCB_FUNCTIONAL]).save_to_disk(str(tmp_path / "hf"))
    expected = read_eval_items(write_jsonl(tmp_path / "lcb.jsonl", [LCB_STDIN, LCB_FUNCTIONAL]), "code")
    assert [i.item_id for i in expected] == ["toy_sum", "toy_shift"]
    for path in ("lcb.parquet", "hf"):
        assert read_eval_items(str(tmp_path / path), "code") == expected, path


# --- the date window -----------------------------------------------------------------------------------------------


def test_the_date_window_is_inclusive_and_drops_undated_items(tmp_path):
    dates = {"a": "2024-09-30T23:59:59", "b": "2024-10-01T00:00:00", "c": "2025-02-01T00:00:00",
             "d": "2025-02-02T00:00:00", "e": ""}
    path = write_jsonl(tmp_path / "lcb.jsonl",
                       [{**LCB_STDIN, "question_id": k, "contest_date": v} for k, v in dates.items()])
    windowed = read_eval_items(path, "code", date_from="2024-10-01", date_to="2025-02-01")
    assert [(i.item_id, i.date) for i in windowed] == [("b", "2024-10-01"), ("c", "2025-02-01")]
    assert [i.item_id for i in read_eval_items(path, "code", date_from="2025-02-01")] == ["c", "d"]
    assert [(i.item_id, i.date) for i in read_eval_items(path, "code")] == [
        ("a", "2024-09-30"), ("b", "2024-10-01"), ("c", "2025-02-01"), ("d", "2025-02-02"), ("e", None)]


# --- errors name the config key --------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"fmt": "xml"}, "evaluate.benchmarks.3.format: 'xml' is not one of auto, plain, humaneval, livecodebench"),
    ({"kind": "chat"}, "evaluate.benchmarks.3.kind: 'chat' is not one of math, code"),
    ({"kind": "math", "fmt": "livecodebench"}, "evaluate.benchmarks.3.kind: livecodebench items are code, not math"),
    ({"fields": {"text": "q"}}, "evaluate.benchmarks.3.fields: unknown text (known: id, prompt, answer, difficulty, "
                                "date, tests)"),
    ({"date_from": "Oct 2024"}, "evaluate.benchmarks.3.date_from: 'Oct 2024' is not an ISO date (YYYY-MM-DD)"),
    ({"date_from": "2025-02-01", "date_to": "2024-10-01"},
     "evaluate.benchmarks.3.date_to: '2024-10-01' is before date_from '2025-02-01'"),
])
def test_bad_arguments_name_the_key(tmp_path, kwargs, message):
    kwargs = {"kind": "code", **kwargs}
    with pytest.raises(EvalItemsError) as err:
        read_eval_items(write_jsonl(tmp_path / "lcb.jsonl", [LCB_STDIN]), key="evaluate.benchmarks.3", **kwargs)
    assert str(err.value) == message


def test_auto_detected_code_rows_under_a_math_kind_are_an_error(tmp_path):
    path = write_jsonl(tmp_path / "lcb.jsonl", [LCB_STDIN])
    with pytest.raises(EvalItemsError, match=r"^evaluate\.benchmarks\.0\.kind: .* holds livecodebench rows, which "
                                             r"are code, not math$"):
        read_eval_items(path, "math")


@pytest.mark.parametrize("name, content, message", [
    ("missing.jsonl", None, "does not exist"),
    ("b.parquet", "not parquet", "cannot read benchmark"),
    ("b.jsonl", '{"problem": "x", "answer": "1"}\n{not json\n', "cannot read benchmark"),
    ("b.jsonl", "", "has no items"),
    ("b.jsonl", '{"id": 1, "problem": "x", "answer": "1"}\n{"id": "1", "problem": "y", "answer": "2"}\n',
     "item id '1' occurs twice"),
    ("b.jsonl", '{"problem": "x", "answer": "1"}\n', "no item of"),
])
def test_unreadable_benchmarks_name_the_path_key(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    window = {"date_from": "2024-01-01"} if message == "no item of" else {}
    key = "evaluate.benchmarks.1"
    with pytest.raises(EvalItemsError) as err:
        read_eval_items(str(tmp_path / name), "math", key=key, **window)
    expected_key = f"{key}.date_from: " if window else f"{key}.path: "
    assert str(err.value).startswith(expected_key) and message in str(err.value)
