"""The normalized query row: parsing and validation in plain Python (no Spark).

`parse_line` turns one raw input line (bytes) into either a normalized query dict or a rejection
with a short machine-readable reason (`invalid_json`, `unknown_category`, ...) and a human detail.
The Spark ingest stage only wraps this, so every rule here is testable without a JVM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from distill.config import CATEGORIES
from distill.ids import content_hash, query_id

ROLES = ("system", "user", "assistant")
TEST_LANGUAGES = ("python", "cpp")
KNOWN_FIELDS = {"id", "source", "category", "messages", "query", "reference_answer", "test_cases", "constraints"}


class Rejected(Exception):
    """A row that cannot become a query. `reason` is a stable code; `detail` says what exactly."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Parsed:
    row: dict | None  # the normalized query, or None when rejected
    reason: str | None = None
    detail: str | None = None


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _messages(record: dict) -> list[dict]:
    has_messages, has_query = record.get("messages") is not None, record.get("query") is not None
    if has_messages and has_query:
        raise Rejected("ambiguous_prompt", "both 'messages' and 'query' are set")
    if has_query:
        if not isinstance(record["query"], str):
            raise Rejected("invalid_type", f"'query' must be a string, got {_kind(record['query'])}")
        return [{"role": "user", "content": record["query"]}]
    if not has_messages:
        raise Rejected("missing_field", "'messages' or 'query' is required")
    messages = record["messages"]
    if not isinstance(messages, list):
        raise Rejected("invalid_type", f"'messages' must be an array, got {_kind(messages)}")
    if not messages:
        raise Rejected("invalid_messages", "'messages' is empty")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Rejected("invalid_messages", f"messages[{i}] must be an object, got {_kind(message)}")
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise Rejected("invalid_messages", f"messages[{i}] has unknown fields {extra}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise Rejected("invalid_role", f"messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise Rejected("invalid_content", f"messages[{i}].content must be a string, got {_kind(content)}")
        if role == "system" and i != 0:
            raise Rejected("invalid_role", f"messages[{i}]: a system message may only come first")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise Rejected("invalid_role",
                       f"the last message must be the user's (the teacher answers it), got {out[-1]['role']!r}")
    return out


def _reference(record: dict) -> str | None:
    ref = record.get("reference_answer")
    if ref is None or isinstance(ref, str):
        return ref
    if isinstance(ref, (int, float)) and not isinstance(ref, bool):
        return str(ref)  # a numeric answer is a natural way to write one; keep its text
    raise Rejected("invalid_type", f"'reference_answer' must be a string or null, got {_kind(ref)}")


def _test_cases(record: dict) -> dict | None:
    tc = record.get("test_cases")
    if tc is None:
        return None
    if not isinstance(tc, dict):
        raise Rejected("invalid_test_cases", f"'test_cases' must be an object, got {_kind(tc)}")
    language = tc.get("language")
    if language not in TEST_LANGUAGES:
        raise Rejected("invalid_test_cases", f"test_cases.language is {language!r}; expected python or cpp")
    tests = tc.get("tests")
    if not isinstance(tests, list) or not tests:
        raise Rejected("invalid_test_cases", "test_cases.tests must be a non-empty array")
    out = []
    for i, test in enumerate(tests):
        kind = test.get("type") if isinstance(test, dict) else None
        if kind == "stdio":
            if not isinstance(test.get("input"), str) or not isinstance(test.get("output"), str):
                raise Rejected("invalid_test_cases", f"tests[{i}]: stdio needs string 'input' and 'output'")
            out.append({"type": "stdio", "input": test["input"], "output": test["output"], "code": None})
        elif kind == "assert":
            if language != "python":
                raise Rejected("invalid_test_cases", f"tests[{i}]: assert tests are Python only")
            if not isinstance(test.get("code"), str):
                raise Rejected("invalid_test_cases", f"tests[{i}]: assert needs string 'code'")
            out.append({"type": "assert", "input": None, "output": None, "code": test["code"]})
        else:
            raise Rejected("invalid_test_cases", f"tests[{i}].type must be 'stdio' or 'assert'")
    return {"language": language, "tests": out}


def _constraints(record: dict) -> dict | None:
    c = record.get("constraints")
    if c is None:
        return None
    if not isinstance(c, dict):
        raise Rejected("invalid_constraints", f"'constraints' must be an object, got {_kind(c)}")
    ids, kwargs = c.get("instruction_id_list"), c.get("kwargs")
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids) or not ids:
        raise Rejected("invalid_constraints", "instruction_id_list must be a non-empty array of strings")
    if kwargs is None:
        kwargs = [{} for _ in ids]
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise Rejected("invalid_constraints", "kwargs must be an array of objects, one per instruction id")
    # kwargs differ in shape per instruction, so each is kept as canonical JSON text.
    return {"instruction_id_list": ids, "kwargs": [json.dumps(k, sort_keys=True, ensure_ascii=False) for k in kwargs]}


def apply_mapping(record: dict, fields: dict[str, str], category: str | None) -> dict:
    """Rename a public dataset's fields into the normalized schema (`fields`: ours -> theirs)."""
    if not fields and category is None:
        return record
    out = {ours: record[theirs] for ours, theirs in fields.items() if theirs in record}
    if category is not None and "category" not in out:
        out["category"] = category
    return out


def normalize(record: Any, source: str) -> dict:
    """Validate one decoded record and return the normalized query row (raises Rejected)."""
    if not isinstance(record, dict):
        raise Rejected("not_an_object", f"a line must hold one JSON object, got {_kind(record)}")
    category = record.get("category")
    if category is None:
        raise Rejected("missing_field", "'category' is required")
    if category not in CATEGORIES:
        raise Rejected("unknown_category", f"{category!r} is not one of {', '.join(CATEGORIES)}")
    row_source = record.get("source", source)
    if not isinstance(row_source, str) or not row_source:
        raise Rejected("invalid_type", f"'source' must be a non-empty string, got {_kind(row_source)}")
    source_id = record.get("id")
    if source_id is not None:
        if isinstance(source_id, bool) or not isinstance(source_id, (str, int)):
            raise Rejected("invalid_type", f"'id' must be a string, got {_kind(source_id)}")
        source_id = str(source_id)
    content = {
        "category": category,
        "messages": _messages(record),
        "reference_answer": _reference(record),
        "test_cases": _test_cases(record),
        "constraints": _constraints(record),
    }
    extra = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    return {
        "query_id": query_id(row_source, source_id, content),
        "source": row_source,
        "source_id": source_id,
        **content,
        "content_hash": content_hash(content),
        # Fields outside the schema are kept, not dropped: users' metadata travels with the query.
        "metadata": json.dumps(extra, sort_keys=True, ensure_ascii=False) if extra else None,
    }


def parse_line(raw: bytes, source: str, max_line_bytes: int, mapping: dict[str, str] | None = None,
               category: str | None = None, shape: str = "default") -> Parsed:
    """One JSONL line -> Parsed. Never raises for bad input."""
    if len(raw) > max_line_bytes:
        return Parsed(None, "line_too_long", f"{len(raw)} bytes > ingest.max_line_bytes={max_line_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Parsed(None, "invalid_utf8", f"byte {err.start}: {err.reason}")
    if not text.strip():
        return Parsed(None, "empty_line", "the line holds only whitespace")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return Parsed(None, "invalid_json", f"{err.msg} (column {err.colno})")
    except RecursionError:
        return Parsed(None, "invalid_json", "nested too deeply")
    return parse_record(record, source, mapping, category, shape)


def parse_record(record: Any, source: str, mapping: dict[str, str] | None = None,
                 category: str | None = None, shape: str = "default") -> Parsed:
    """One decoded record (a JSON object or a Parquet row) -> Parsed. shape `am-release`: a row of the a-m-team
    releases (distill.release_shape; `mapping` renames its fields), else the normalized schema (`mapping`:
    apply_mapping's)."""
    try:
        if shape == "am-release":
            from distill.release_shape import release_query

            record = release_query(record, mapping, category)
        elif isinstance(record, dict):
            record = apply_mapping(record, mapping or {}, category)
        return Parsed(normalize(record, source))
    except Rejected as rej:
        return Parsed(None, rej.reason, rej.detail)
