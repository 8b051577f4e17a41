"""Teacher responses: the `<think>…</think><answer>…</answer>` format, split into its parts.

The parser is lenient on purpose: whitespace and letter case around the tags are tolerated and a
missing part is reported in the result, never raised. Verifiers read `answer_part`; the structure
scorer reads the flags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = re.compile(r"<think>", re.I), re.compile(r"</think>", re.I)
ANSWER_OPEN, ANSWER_CLOSE = re.compile(r"<answer>", re.I), re.compile(r"</answer>", re.I)
ANY_TAG = re.compile(r"</?\s*(think|answer)\s*>", re.I)
CODE_BLOCK = re.compile(r"```[ \t]*([\w+#-]*)[^\n]*\n(.*?)```", re.S)


@dataclass(frozen=True)
class ParsedResponse:
    think: str | None  # text inside <think>…</think>; None when there is no think part
    answer: str | None  # text inside <answer>…</answer> (or after </think>); None when there is none
    think_complete: bool  # both think tags present, in order
    answer_complete: bool  # both answer tags present, in order, after the think part
    leftover_tags: int  # think/answer tags beyond the expected four (e.g. a nested or repeated tag)


def _span(text: str, open_re: re.Pattern, close_re: re.Pattern, start: int = 0) -> tuple[int, int, int] | None:
    """(content start, content end, end of closing tag) of the first open…close pair at or after start."""
    o = open_re.search(text, start)
    if not o:
        return None
    c = close_re.search(text, o.end())
    if not c:
        return None
    return o.end(), c.start(), c.end()


def parse_response(text: str | None) -> ParsedResponse:
    text = text or ""
    think = _span(text, THINK_OPEN, THINK_CLOSE)
    after_think = think[2] if think else 0
    answer = _span(text, ANSWER_OPEN, ANSWER_CLOSE, after_think)
    if answer:
        answer_text = text[answer[0] : answer[1]].strip()
    elif think:
        # No answer tags: what follows </think> is the answer (the R1 / Qwen3 convention).
        rest = ANSWER_OPEN.sub("", text[after_think:], count=1).strip()
        answer_text = rest or None
    else:
        answer_text = None
    expected = 2 * (think is not None) + 2 * (answer is not None)
    return ParsedResponse(
        think=text[think[0] : think[1]].strip() if think else None,
        answer=answer_text,
        think_complete=think is not None,
        answer_complete=answer is not None,
        leftover_tags=len(ANY_TAG.findall(text)) - expected,
    )


def answer_part(text: str | None) -> str | None:
    """The part of a response that answer and constraint checks read."""
    return parse_response(text).answer


def last_code_block(text: str | None) -> tuple[str, str] | None:
    """(language tag, code) of the last fenced block, or None. The tag is lower-case, possibly ''."""
    blocks = CODE_BLOCK.findall(text or "")
    if not blocks:
        return None
    lang, code = blocks[-1]
    return lang.lower(), code
