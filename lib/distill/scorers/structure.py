"""Structure score: does a response have the `<think>…</think><answer>…</answer>` shape the paper requires?

Rules, checked in this order; `reason` names the first one that fails (None when all pass, i.e. `ok`):

    truncated      the engine stopped at its token limit (finish_reason "length"); whatever the text looks
                   like, it is not the whole response
    no_think       no complete `<think>…</think>` pair
    no_answer      no complete `<answer>…</answer>` pair after the think part; an answer written after
                   `</think>` without answer tags (the R1 / Qwen3 convention) does not count, because the
                   paper keeps only responses with both tagged parts
    empty_think    the think pair is there but holds only whitespace
    empty_answer   the answer pair is there but holds only whitespace
    leftover_tags  think/answer tags beyond the expected four (repeated, nested or unclosed ones)

Tags are matched leniently (whitespace and letter case around them), as in `distill.response`.
"""

from __future__ import annotations

from dataclasses import dataclass

from distill.response import parse_response

VERSION = "1"

REASONS = ("truncated", "no_think", "no_answer", "empty_think", "empty_answer", "leftover_tags")


@dataclass(frozen=True)
class StructureScore:
    """Flat on purpose (bools, ints, a str), so that it maps to one Spark struct column."""

    think_complete: bool
    answer_complete: bool
    truncated: bool
    leftover_tags: int
    empty_think: bool
    empty_answer: bool
    ok: bool
    reason: str | None  # first failing rule of REASONS; None when ok


def structure(response: str | None, finish_reason: str | None) -> StructureScore:
    p = parse_response(response)
    truncated = finish_reason == "length"
    # parse_response strips the parts, so a whitespace-only part comes back as "".
    empty_think = p.think is not None and not p.think
    empty_answer = p.answer_complete and not p.answer
    failed = {
        "truncated": truncated,
        "no_think": not p.think_complete,
        "no_answer": not p.answer_complete,
        "empty_think": empty_think,
        "empty_answer": empty_answer,
        "leftover_tags": p.leftover_tags > 0,
    }
    reason = next((r for r in REASONS if failed[r]), None)
    return StructureScore(
        think_complete=p.think_complete,
        answer_complete=p.answer_complete,
        truncated=truncated,
        leftover_tags=p.leftover_tags,
        empty_think=empty_think,
        empty_answer=empty_answer,
        ok=reason is None,
        reason=reason,
    )
