"""The a-m-team releases' row shape (AM-Thinking-v1-Distilled, AM-Qwen3-Distilled) as queries and as responses,
in plain Python: `ingest` reads a release file as queries (`shape: am-release` on a source) and the replay
engine reads the same file as a teacher's responses (`shape: am-release` in its engine_args).

A release row is one conversation, `{"messages": [{"role", "content", "info"}, ...]}`. Each turn's `info`
holds `source`, `reference_answer`, `test_case`, `think_content` and `answer_content` (null where they do not
apply: the user's turn carries the reference answer or the test cases, the assistant's turn its think and
answer parts) and, on the assistant's turn, the release's own `verify_score`. The release ships one file per
category, so the category is the source's (`category:` in the config), never the row's. What is read:

  the query          the turns before the last assistant turn (all turns when there is none), role and content
  reference_answer   the last non-null `reference_answer` in those turns' info
  test_cases         the last non-null `test_case` in those turns' info, converted by `release_test_cases`
  metadata           the release's own source (`info.source` of those turns) as `release_source`
  the response       the last assistant turn's content; when that has no <think> tag and its info has both
                     parts: "<think>\\n{think_content}\\n</think>\\n<answer>\\n{answer_content}\\n</answer>"
  the release score  `verify_score` of the last assistant turn's info, else of the row itself (a number)

`fields` renames any of these names (ours -> the data's, e.g. {verify_score: score}), and `id` names a row
field holding the row's own id (default `id`; without one, a query's id comes from its content). A row that
cannot become a query raises `Rejected` with a reason, so ingest quarantines it like any bad line.
"""

from __future__ import annotations

import json
import math
from typing import Any

from distill.config import CATEGORIES
from distill.ids import query_id
from distill.records import Rejected, normalize

SHAPE = "am-release"
FIELDS = {
    "id": "id", "messages": "messages", "info": "info", "source": "source", "reference_answer": "reference_answer",
    "test_case": "test_case", "think_content": "think_content", "answer_content": "answer_content",
    "verify_score": "verify_score",
}


def check_fields(fields: dict[str, str]) -> None:
    """Raise ValueError naming a `fields` key the shape does not know."""
    for name in fields:
        if name not in FIELDS:
            raise ValueError(f"fields.{name}: not a field of shape {SHAPE} (known: {', '.join(sorted(FIELDS))})")


def _names(fields: dict[str, str] | None) -> dict[str, str]:
    return {**FIELDS, **(fields or {})}


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:8]}"
    if isinstance(value, list):
        return "an empty array" if not value else f"an array of {type(value[0]).__name__}"
    return type(value).__name__


def _turns(record: dict, f: dict[str, str]) -> list[tuple[dict, dict]]:
    """(turn, its info) of the row's conversation."""
    messages = record.get(f["messages"])
    if not isinstance(messages, list) or not messages:
        raise Rejected("invalid_messages", f"{f['messages']!r} must be a non-empty array of turns")
    out = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict):
            raise Rejected("invalid_messages", f"messages[{i}] must be an object, got {type(turn).__name__}")
        info = turn.get(f["info"])
        if info is not None and not isinstance(info, dict):
            raise Rejected("invalid_messages", f"messages[{i}].{f['info']} must be an object")
        out.append((turn, info or {}))
    return out


def _split(turns: list[tuple[dict, dict]]) -> tuple[list[tuple[dict, dict]], tuple[dict, dict] | None]:
    """(the turns before the last assistant turn, that turn); all turns and None when there is none."""
    last = max((i for i, (t, _) in enumerate(turns) if t.get("role") == "assistant"), default=None)
    return (turns, None) if last is None else (turns[:last], turns[last])


def _last(infos: list[dict], name: str) -> Any:
    return next((info[name] for info in reversed(infos) if info.get(name) is not None), None)


def release_test_cases(value: Any) -> dict | None:
    """The release's `test_case` as the normalized `test_cases` object (records validates it further).

    Converted forms (a JSON text of them too): our own `{language, tests}`; `{inputs: [str], outputs: [str]}`
    (stdin/stdout pairs, Python unless the object names a `language`); an array of Python `assert` statements;
    an array of `{input, output}` objects. Anything else, call-based tests (`fn_name`) included, raises
    Rejected("unsupported_test_case"): a test that cannot be run as the release ran it is not guessed at.
    Null, empty text and empty arrays or objects mean no tests."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise Rejected("unsupported_test_case", "test_case is text that is not JSON") from None
    if isinstance(value, (dict, list)) and not value:
        return None
    if isinstance(value, dict) and "tests" in value:
        return value
    if isinstance(value, dict) and ("inputs" in value or "outputs" in value):
        if value.get("fn_name"):
            raise Rejected("unsupported_test_case",
                           f"call-based tests (fn_name {str(value['fn_name'])[:40]!r}) are not converted")
        inputs, outputs = value.get("inputs"), value.get("outputs")
        if (not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs)
                or not all(isinstance(x, str) for x in [*inputs, *outputs])):
            raise Rejected("unsupported_test_case", "inputs and outputs must be arrays of strings of one length")
        return {"language": value.get("language", "python"),
                "tests": [{"type": "stdio", "input": i, "output": o} for i, o in zip(inputs, outputs, strict=True)]}
    if isinstance(value, list) and all(isinstance(t, str) and t.lstrip().startswith("assert") for t in value):
        return {"language": "python", "tests": [{"type": "assert", "code": t} for t in value]}
    if isinstance(value, list) and all(isinstance(t, dict) and isinstance(t.get("input"), str)
                                       and isinstance(t.get("output"), str) for t in value):
        return {"language": "python",
                "tests": [{"type": "stdio", "input": t["input"], "output": t["output"]} for t in value]}
    raise Rejected("unsupported_test_case", f"test_case is {_kind(value)}: not a form that converts to tests")


def release_query(record: Any, fields: dict[str, str] | None, category: str | None) -> dict:
    """A release row -> a record in the normalized query schema (for records.normalize). Raises Rejected."""
    if not isinstance(record, dict):
        return record  # normalize says what is wrong with it
    f = _names(fields)
    prompt, _ = _split(_turns(record, f))
    infos = [info for _, info in prompt]
    out = {"category": category, "messages": [{"role": t.get("role"), "content": t.get("content")} for t, _ in prompt],
           "reference_answer": _last(infos, f["reference_answer"]),
           "test_cases": release_test_cases(_last(infos, f["test_case"]))}
    if record.get(f["id"]) is not None:
        out["id"] = record[f["id"]]
    release_source = _last(infos, f["source"])
    if release_source is not None:
        out["release_source"] = release_source  # kept in the query's metadata
    return out


def release_query_ids(record: Any, source: str, category: str | None, fields: dict[str, str] | None) -> list[str]:
    """The query id ingest gives this row as source `source` with `category`; with None, the ids it would have
    under each category (a query's id holds its category; a replay reading every file of a release tries them
    all). [] for a row ingest quarantines."""
    try:
        row = normalize(release_query(record, fields, category or CATEGORIES[0]), source)
    except Rejected:
        return []
    if category is not None or row["source_id"] is not None:  # an id of the row's own holds no category
        return [row["query_id"]]
    content = {k: row[k] for k in ("category", "messages", "reference_answer", "test_cases", "constraints")}
    return [query_id(source, None, {**content, "category": c}) for c in CATEGORIES]


def _score(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def release_response(record: Any, fields: dict[str, str] | None) -> dict | None:
    """A release row -> {"messages": the query's turns (role, content), "response": str, "release_score":
    float | None}; None for a row without an assistant turn that has a response (replay skips it)."""
    if not isinstance(record, dict):
        return None
    f = _names(fields)
    try:
        prompt, answer = _split(_turns(record, f))
    except Rejected:
        return None
    if answer is None:
        return None
    turn, info = answer
    content, think, final = turn.get("content"), info.get(f["think_content"]), info.get(f["answer_content"])
    if isinstance(content, str) and "<think>" in content.lower():
        response = content
    elif isinstance(think, str) and isinstance(final, str):
        response = f"<think>\n{think}\n</think>\n<answer>\n{final}\n</answer>"
    elif isinstance(content, str):
        response = content
    else:
        return None
    score = _score(info.get(f["verify_score"]))
    if score is None:
        score = _score(record.get(f["verify_score"]))
    return {"messages": [{"role": t.get("role"), "content": t.get("content")} for t, _ in prompt],
            "response": response, "release_score": score}
