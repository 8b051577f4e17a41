"""The response parser: think and answer parts split leniently (whitespace, letter case), missing or
truncated parts recorded rather than raised, leftover tags counted, and the last fenced code block."""

from __future__ import annotations

import pytest
from distill.response import ParsedResponse, answer_part, last_code_block, parse_response


@pytest.mark.parametrize(("text", "expected"), [
    ("<think>a</think><answer>b</answer>", ParsedResponse("a", "b", True, True, 0)),
    (" <THINK>\n a \n</think>\n\n<Answer> b </ANSWER> ", ParsedResponse("a", "b", True, True, 0)),
    ("<think>a</think> b", ParsedResponse("a", "b", True, False, 0)),  # R1 style: answer after </think>
    ("<think>a</think><answer>b", ParsedResponse("a", "b", True, False, 1)),  # truncated inside the answer
    ("<think>a, then cut off", ParsedResponse(None, None, False, False, 1)),  # truncated inside the thinking
    ("just text", ParsedResponse(None, None, False, False, 0)),
    ("<answer>b</answer>", ParsedResponse(None, "b", False, True, 0)),
    ("<think>a</think><answer>b</answer><answer>c</answer>", ParsedResponse("a", "b", True, True, 2)),
    ("<think>a<think>x</think></think><answer>b</answer>", ParsedResponse("a<think>x", "b", True, True, 2)),
    ("", ParsedResponse(None, None, False, False, 0)),
    (None, ParsedResponse(None, None, False, False, 0)),
])
def test_parse_response(text, expected):
    assert parse_response(text) == expected


def test_answer_part_is_what_checks_read():
    assert answer_part("<think>The answer is 3.</think><answer>4</answer>") == "4"
    assert answer_part("<think>only thinking</think>") is None


def test_last_code_block():
    text = "```python\nprint(1)\n```\ntext\n```C++ \nint main() {}\n```\n"
    assert last_code_block(text) == ("c++", "int main() {}\n")
    assert last_code_block("```\nplain\n```") == ("", "plain\n")
    assert last_code_block("no code here") is None
    assert last_code_block("```python\nnever closed") is None
