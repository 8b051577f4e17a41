"""Normalized query rows: what is accepted, what it becomes, and each rejection with its reason."""

from __future__ import annotations

import json

import pytest
from distill.ids import stable_id
from distill.records import parse_line, parse_record

LIMIT = 10_000


def line(obj) -> bytes:
    return json.dumps(obj).encode()


def test_a_query_row_is_normalized_in_full():
    parsed = parse_line(line({"id": 7, "category": "math", "query": "What is 6*7?", "reference_answer": 42,
                              "difficulty": "easy"}), "src", LIMIT)
    content = {
        "category": "math",
        "messages": [{"role": "user", "content": "What is 6*7?"}],
        "reference_answer": "42",
        "test_cases": None,
        "constraints": None,
    }
    assert parsed.reason is None
    assert parsed.row == {
        "query_id": stable_id("id", "src", "7"),
        "source": "src",
        "source_id": "7",
        **content,
        "content_hash": stable_id("content", json.dumps(content, sort_keys=True, separators=(",", ":"))),
        "metadata": '{"difficulty": "easy"}',
    }


def test_code_and_constraints_are_normalized():
    row = parse_line(line({
        "category": "code", "source": "own", "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add two numbers."}],
        "test_cases": {"language": "python", "tests": [
            {"type": "stdio", "input": "1 2\n", "output": "3\n"}, {"type": "assert", "code": "assert f(1) == 1"}]},
        "constraints": {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"b": 1, "a": 2}]},
    }), "default", LIMIT).row
    assert row["source"] == "own" and row["source_id"] is None
    assert row["test_cases"] == {"language": "python", "tests": [
        {"type": "stdio", "input": "1 2\n", "output": "3\n", "code": None},
        {"type": "assert", "input": None, "output": None, "code": "assert f(1) == 1"}]}
    assert row["constraints"] == {"instruction_id_list": ["punctuation:no_comma"], "kwargs": ['{"a": 2, "b": 1}']}


def test_multi_turn_messages_are_kept_in_order():
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert parse_line(line({"category": "multi_turn", "messages": msgs}), "s", LIMIT).row["messages"] == msgs


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"category": "math", "query": "x"', "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (b"   ", "empty_line"),
        (b"", "empty_line"),
        (b'{"category": "math", "query": "caf\xe9"}', "invalid_utf8"),
        (line({"query": "x"}), "missing_field"),
        (line({"category": "poetry", "query": "x"}), "unknown_category"),
        (line({"category": "math"}), "missing_field"),
        (line({"category": "math", "query": "x", "messages": []}), "ambiguous_prompt"),
        (line({"category": "math", "query": 5}), "invalid_type"),
        (line({"category": "math", "messages": "hi"}), "invalid_type"),
        (line({"category": "math", "messages": []}), "invalid_messages"),
        (line({"category": "math", "messages": ["hi"]}), "invalid_messages"),
        (line({"category": "math", "messages": [{"role": "user", "content": "x", "name": "n"}]}), "invalid_messages"),
        (line({"category": "math", "messages": [{"role": "robot", "content": "x"}]}), "invalid_role"),
        (line({"category": "math", "messages": [{"role": "user", "content": ["x"]}]}), "invalid_content"),
        (line({"category": "math", "messages": [{"role": "user", "content": None}]}), "invalid_content"),
        (line({"category": "math", "messages": [{"role": "user", "content": "a"},
                                                {"role": "assistant", "content": "b"}]}), "invalid_role"),
        (line({"category": "math", "messages": [{"role": "user", "content": "a"},
                                                {"role": "system", "content": "b"},
                                                {"role": "user", "content": "c"}]}), "invalid_role"),
        (line({"category": "math", "query": "x", "reference_answer": ["4"]}), "invalid_type"),
        (line({"category": "math", "query": "x", "id": {"a": 1}}), "invalid_type"),
        (line({"category": "math", "query": "x", "source": ""}), "invalid_type"),
        (line({"category": "code", "query": "x", "test_cases": {"language": "rust", "tests": []}}),
         "invalid_test_cases"),
        (line({"category": "code", "query": "x", "test_cases": {"language": "cpp", "tests": [
            {"type": "assert", "code": "x"}]}}), "invalid_test_cases"),
        (line({"category": "code", "query": "x", "test_cases": {"language": "python", "tests": [
            {"type": "stdio", "input": 1, "output": "1"}]}}), "invalid_test_cases"),
        (line({"category": "instruction_following", "query": "x", "constraints": {
            "instruction_id_list": ["a", "b"], "kwargs": [{}]}}), "invalid_constraints"),
    ],
)
def test_rejections(raw, reason):
    parsed = parse_line(raw, "s", LIMIT)
    assert parsed.row is None
    assert parsed.reason == reason
    assert parsed.detail


def test_line_length_limit_is_inclusive():
    ok = line({"category": "math", "query": "x" * 50})
    assert parse_line(ok, "s", len(ok)).row is not None
    assert parse_line(ok, "s", len(ok) - 1).reason == "line_too_long"


def test_source_mapping_for_public_datasets():
    record = {"problem": "What is 1+1?", "solution": "2", "uid": "p-1", "unused": True}
    parsed = parse_record(record, "pub", {"query": "problem", "reference_answer": "solution", "id": "uid"}, "math")
    assert parsed.row["messages"] == [{"role": "user", "content": "What is 1+1?"}]
    assert (parsed.row["category"], parsed.row["reference_answer"], parsed.row["source_id"]) == ("math", "2", "p-1")
    assert parsed.row["metadata"] is None
