"""The structure scorer: each rule (truncated, no_think, no_answer, empty_think, empty_answer, leftover_tags)
on both sides, the order in which `reason` reports them, tag whitespace/case tolerance, and a None response."""

from __future__ import annotations

import dataclasses

import pytest
from distill.scorers.structure import REASONS, VERSION, StructureScore, structure

GOOD = "<think>Add 2 and 2.</think><answer>4</answer>"


def test_ok_response():
    assert structure(GOOD, "stop") == StructureScore(
        think_complete=True, answer_complete=True, truncated=False, leftover_tags=0,
        empty_think=False, empty_answer=False, ok=True, reason=None)
    # Engines that do not report a finish reason are not treated as truncated.
    assert structure(GOOD, None).ok


def test_truncated_by_length_fails_even_when_the_text_looks_complete():
    s = structure(GOOD, "length")
    assert (s.truncated, s.ok, s.reason) == (True, False, "truncated")
    assert (s.think_complete, s.answer_complete) == (True, True)
    # Truncation is the first rule: a cut-off response reports it rather than the missing parts.
    s = structure("<think>Add 2 and 2, then", "length")
    assert (s.truncated, s.think_complete, s.answer_complete, s.reason) == (True, False, False, "truncated")


@pytest.mark.parametrize(("text", "reason"), [
    ("<answer>4</answer>", "no_think"),
    ("just the answer: 4", "no_think"),
    ("<think>Add 2 and 2, then", "no_think"),  # cut off without finish_reason "length"
    ("<think>Add 2 and 2.</think> 4", "no_answer"),  # R1 style, no answer tags: the paper needs both parts
    ("<think>Add 2 and 2.</think>", "no_answer"),
    ("<think>Add 2 and 2.</think><answer>4", "no_answer"),  # unclosed answer (also a leftover tag)
    ("<answer>4</answer><think>Add 2 and 2.</think>", "no_answer"),  # answer must follow the think part
    ("<think> \n\t </think><answer>4</answer>", "empty_think"),
    ("<think></think><answer></answer>", "empty_think"),  # both empty: the earlier rule is reported
    ("<think>Add 2 and 2.</think><answer> \n </answer>", "empty_answer"),
    ("<think>Add 2 and 2.</think><answer>4</answer><answer>5</answer>", "leftover_tags"),
    ("<think>a<think>b</think></think><answer>4</answer>", "leftover_tags"),
    ("<think>Add 2 and 2.</think><answer>4</answer></think>", "leftover_tags"),
])
def test_first_failing_rule(text, reason):
    s = structure(text, "stop")
    assert (s.ok, s.reason) == (False, reason)


def test_flags():
    s = structure("<think> </think><answer>4</answer>", "stop")
    assert (s.empty_think, s.empty_answer) == (True, False)
    s = structure("<think>x</think><answer> </answer>", "stop")
    assert (s.empty_think, s.empty_answer) == (False, True)
    # A missing part is not an empty one.
    s = structure("<answer>4</answer>", "stop")
    assert (s.think_complete, s.answer_complete, s.empty_think, s.empty_answer) == (False, True, False, False)
    s = structure("<think>x</think>", "stop")
    assert (s.think_complete, s.answer_complete, s.empty_think, s.empty_answer) == (True, False, False, False)
    assert structure("<think>a</think><answer>b</answer><answer>c</answer>", "stop").leftover_tags == 2
    assert structure("<think>a</think><answer>b", "stop").leftover_tags == 1


def test_whitespace_and_case_tolerance():
    s = structure(" <THINK>\n Add 2 and 2. \n</Think>\n\n<Answer> 4 </ANSWER>\n", "stop")
    assert (s.ok, s.reason, s.leftover_tags) == (True, None, 0)


@pytest.mark.parametrize("text", [None, ""])
def test_missing_response(text):
    assert structure(text, None) == StructureScore(
        think_complete=False, answer_complete=False, truncated=False, leftover_tags=0,
        empty_think=False, empty_answer=False, ok=False, reason="no_think")


def test_flat_for_spark_and_versioned():
    assert {f.type for f in dataclasses.fields(StructureScore)} == {"bool", "int", "str | None"}
    assert REASONS == ("truncated", "no_think", "no_answer", "empty_think", "empty_answer", "leftover_tags")
    assert VERSION == "1"
