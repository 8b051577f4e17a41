"""Evaluation benchmarks (AIME/MATH500-style math, HumanEval, LiveCodeBench) read into normalized items, on
the driver: a benchmark is hundreds of items, not millions.

Three row formats: `plain` (a prompt and an answer, or test cases in the project's schema, under field names
that `fields` can remap), `humaneval` and `livecodebench` (their release rows as published); `auto` picks one
from the benchmark's first row. Code items carry test_cases in the schema the code verifier reads.

A row that cannot be used becomes an item with a `bad_reason` that is never run, rather than a missing item:
a benchmark that silently shrinks would change every score computed on it. A file that cannot be read, a
wrong format or kind, or duplicate item ids are errors that name the config key instead.

LiveCodeBench ships its private tests as base64(zlib(pickle(json string))). Unpickling runs whatever the
pickle names, so the pickle is read by an unpickler that refuses every global: only builtin values can come
out of it, and only a str is accepted. Nothing else from such a field is decoded, let alone executed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
import json
import os
import pickle
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distill.readers import iter_records

KINDS = ("math", "code")
FORMATS = ("auto", "plain", "humaneval", "livecodebench")
CODE_FORMATS = ("humaneval", "livecodebench")  # these are code benchmarks whatever the config says
FIELD_KEYS = ("id", "prompt", "answer", "difficulty", "date", "tests")
# Where a plain row keeps each value when `fields` does not say; the first present one is taken.
PLAIN_DEFAULTS = {"id": ("id",), "prompt": ("problem", "question", "prompt", "messages"), "answer": ("answer",),
                  "difficulty": ("difficulty", "level"), "date": ("date", "contest_date"), "tests": ("test_cases",)}
# The largest decompressed private-test payload accepted; LiveCodeBench's biggest are tens of MB.
MAX_PRIVATE_BYTES = 256 << 20

HUMANEVAL_INSTRUCTION = ("Complete the function above. Answer with the complete function, its signature and any "
                         "imports it needs included, in a ```python code block.")
LCB_FUNCTIONAL_INSTRUCTION = ("Complete the method of `class Solution` in the starter code above. Answer with the "
                              "complete class in a ```python code block.")
LCB_STDIN_INSTRUCTION = ("Write a Python program that reads the input from stdin and writes the answer to stdout. "
                         "Answer with the complete program in a ```python code block.")


class EvalItemsError(ValueError):
    """A benchmark that cannot be read as configured; the message starts with the config key."""


@dataclass(frozen=True)
class EvalItem:
    item_id: str
    kind: str  # "math" | "code"
    prompt: str  # the user message text
    answer: str | None = None  # math reference answer
    test_cases: dict | None = None  # code: {"language": "python", "tests": [...]}
    difficulty: str | None = None
    date: str | None = None  # ISO date (YYYY-MM-DD)
    bad_reason: str | None = None  # set: the item cannot be used and is never run


# --- small value helpers -----------------------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    """A scalar as text; None, blank strings and containers are None."""
    if value is None or isinstance(value, (dict, list, tuple)):
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None


def _user_text(value: Any) -> str | None:
    """A prompt field: a string, or chat messages (their user turns, joined by a blank line)."""
    if isinstance(value, list):
        turns = [m.get("content") for m in value if isinstance(m, Mapping) and m.get("role") == "user"]
        value = "\n\n".join(t for t in turns if isinstance(t, str) and t.strip())
    return _str(value)


def iso_date(value: Any) -> str | None:
    """"2024-10-05", "2024-10-05T00:00:00" or a date/datetime -> "2024-10-05"; None when absent.
    Raises ValueError for something that is not a date."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.datetime.fromisoformat(text).date().isoformat()
        except ValueError:
            return dt.date.fromisoformat(text[:10]).isoformat()  # "2024-10-05 12:00:00 UTC" and the like
    raise ValueError(f"{type(value).__name__} is not a date")


def _pick(row: Mapping, fields: Mapping[str, str], key: str) -> Any:
    if key in fields:
        return row.get(fields[key])
    return next((row[f] for f in PLAIN_DEFAULTS[key] if row.get(f) is not None), None)


# --- plain -------------------------------------------------------------------------------------------------------


def _plain_tests(value: Any) -> tuple[dict | None, str | None]:
    """(test_cases, why they are unusable) of a plain code row's tests field (an object or its JSON)."""
    if value is None:
        return None, "no test cases"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as err:
            return None, f"test_cases: not JSON ({err})"
    if not isinstance(value, Mapping) or not isinstance(value.get("tests"), list) or not value["tests"]:
        return None, "test_cases: expected {\"language\": ..., \"tests\": [non-empty]}"
    return {"language": str(value.get("language") or "python"), "tests": list(value["tests"])}, None


def plain_item(row: Mapping, number: int, kind: str, fields: Mapping[str, str] | None = None) -> EvalItem:
    """A plain row: id (else the 1-based row number), prompt, and an answer (math) or test cases (code)."""
    fields = fields or {}
    item_id = _str(_pick(row, fields, "id")) or str(number)
    prompt = _user_text(_pick(row, fields, "prompt"))
    difficulty = _str(_pick(row, fields, "difficulty"))
    answer = test_cases = bad = None
    if kind == "math":
        answer = _str(_pick(row, fields, "answer"))
        bad = None if answer is not None else "no answer"
    else:
        test_cases, bad = _plain_tests(_pick(row, fields, "tests"))
    try:
        date = iso_date(_pick(row, fields, "date"))
    except ValueError as err:
        date, bad = None, bad or f"date: {err}"
    if prompt is None:
        bad = "no prompt"
    return EvalItem(item_id, kind, prompt or "", answer, test_cases, difficulty, date, bad)


# --- HumanEval ---------------------------------------------------------------------------------------------------


def humaneval_item(row: Mapping, number: int) -> EvalItem:
    """A HumanEval row (task_id, prompt, test, entry_point): the model writes the whole function, and the
    benchmark's `check(candidate)` runs on it as one assert test."""
    item_id = _str(row.get("task_id")) or str(number)
    prompt, test, entry_point = row.get("prompt"), row.get("test"), row.get("entry_point")
    missing = [name for name, v in (("prompt", prompt), ("test", test), ("entry_point", entry_point))
               if not isinstance(v, str) or not v.strip()]
    if missing:
        return EvalItem(item_id, "code", prompt if isinstance(prompt, str) else "",
                        bad_reason=f"missing {', '.join(missing)}")
    code = f"{test}\n\ncheck({entry_point.strip()})\n"
    return EvalItem(item_id, "code", f"{prompt.rstrip()}\n\n{HUMANEVAL_INSTRUCTION}",
                    test_cases={"language": "python", "tests": [{"type": "assert", "code": code}]})


# --- LiveCodeBench -----------------------------------------------------------------------------------------------


class _NoGlobals(pickle.Unpickler):
    """Refuses every class and function a pickle names (the only way a pickle runs code): what is left can
    build only builtin values."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names the global {module}.{name}")


def decode_private_tests(value: Any) -> list:
    """LiveCodeBench's private_test_cases: base64(zlib(pickle(json string))), or in older releases the JSON
    string itself. Raises ValueError saying what is wrong; never runs anything from the pickle."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    text = value.strip()
    if not text.startswith("["):  # "[" is not in the base64 alphabet: anything else is the pickled form
        try:
            packed = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"not base64 ({err})") from None
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(packed, MAX_PRIVATE_BYTES)
            if inflater.unconsumed_tail:
                raise ValueError(f"more than {MAX_PRIVATE_BYTES} bytes decompressed")
            if not inflater.eof:
                raise ValueError("not zlib (the stream is cut short)")
        except zlib.error as err:
            raise ValueError(f"not zlib ({err})") from None
        try:
            text = _NoGlobals(io.BytesIO(raw)).load()
        except Exception as err:  # noqa: BLE001 - any failure to unpickle is one refusal
            raise ValueError(f"pickle refused: {err}") from None
        if not isinstance(text, str):
            raise ValueError(f"pickle refused: it holds {type(text).__name__}, not str")
    try:
        tests = json.loads(text)
    except ValueError as err:
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(tests, list):
        raise ValueError(f"expected a JSON list, got {type(tests).__name__}")
    return tests


def _json_field(value: Any, default: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    return json.loads(value) if isinstance(value, str) else value


def _lcb_test(test: Any, fn_name: str | None) -> dict:
    """One LiveCodeBench test in the code verifier's schema; ValueError when it is malformed."""
    if not isinstance(test, Mapping):
        raise ValueError(f"a test is {type(test).__name__}, not an object")
    given, output, testtype = test.get("input"), test.get("output"), test.get("testtype")
    if not isinstance(given, str) or not isinstance(output, str):
        raise ValueError("a test's input and output must be strings")
    if testtype == "stdin":
        return {"type": "stdio", "input": given, "output": output}
    if testtype == "functional":
        if not fn_name:
            raise ValueError("a functional problem without metadata.func_name")
        return {"type": "functional", "fn_name": fn_name, "input": given, "output": output}
    raise ValueError(f"unknown testtype {testtype!r}")


def lcb_prompt(content: str, starter_code: str | None, functional: bool) -> str:
    parts = [content.rstrip()]
    if starter_code:
        parts.append(f"```python\n{starter_code.rstrip()}\n```")
    parts.append(LCB_FUNCTIONAL_INSTRUCTION if functional else LCB_STDIN_INSTRUCTION)
    return "\n\n".join(parts)


def livecodebench_item(row: Mapping, number: int) -> EvalItem:
    """A LiveCodeBench release row: public then private tests, stdin ones as stdio tests, functional ones
    calling `Solution().<metadata.func_name>`."""
    item_id = _str(row.get("question_id")) or str(number)
    content = row.get("question_content")
    content = content if isinstance(content, str) else ""
    difficulty = _str(row.get("difficulty"))
    starter = row.get("starter_code") if isinstance(row.get("starter_code"), str) else None
    bad = None
    try:
        date = iso_date(row.get("contest_date"))
    except ValueError as err:
        date, bad = None, f"contest_date: {err}"

    def item(tests: list | None, functional: bool, reason: str | None) -> EvalItem:
        reason = reason or bad or (None if content.strip() else "no question_content")
        test_cases = {"language": "python", "tests": tests} if tests and reason is None else None
        return EvalItem(item_id, "code", lcb_prompt(content, starter.strip() if starter else None, functional),
                        None, test_cases, difficulty, date, reason)

    try:
        metadata = _json_field(row.get("metadata"), {})
        if not isinstance(metadata, Mapping):
            raise ValueError("not an object")
    except ValueError as err:
        return item(None, False, f"metadata: {err}")
    fn_name = _str(metadata.get("func_name"))
    raw = []
    for name in ("public_test_cases", "private_test_cases"):
        try:
            if name == "private_test_cases":
                tests = decode_private_tests(row.get(name))
            else:
                tests = _json_field(row.get(name), [])
                if not isinstance(tests, list):
                    raise ValueError(f"expected a JSON list, got {type(tests).__name__}")
        except ValueError as err:
            return item(None, bool(fn_name), f"{name}: {err}")
        raw += tests
    functional = bool(fn_name) or any(isinstance(t, Mapping) and t.get("testtype") == "functional" for t in raw)
    if not raw:
        return item(None, functional, "no test cases")
    try:
        tests = [_lcb_test(t, fn_name) for t in raw]
    except ValueError as err:
        return item(None, functional, str(err))
    return item(tests, functional, None)


# --- the benchmark -----------------------------------------------------------------------------------------------


def detect_format(row: Mapping) -> str:
    if "question_content" in row and "public_test_cases" in row:
        return "livecodebench"
    if all(f in row for f in ("prompt", "test", "entry_point")):
        return "humaneval"
    return "plain"


def in_window(date: str | None, date_from: str | None, date_to: str | None) -> bool:
    """Inclusive ISO-date window; an undated item is inside only when there is no window."""
    if date_from is None and date_to is None:
        return True
    if date is None:
        return False
    return (date_from is None or date >= date_from) and (date_to is None or date <= date_to)


def _check_args(kind: str, fmt: str, fields: Mapping | None, date_from: str | None, date_to: str | None,
                key: str) -> tuple[str | None, str | None]:
    """The window as ISO dates, after checking every argument; EvalItemsError names the key that is wrong."""
    if fmt not in FORMATS:
        raise EvalItemsError(f"{key}.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if kind not in KINDS:
        raise EvalItemsError(f"{key}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    if fmt in CODE_FORMATS and kind != "code":
        raise EvalItemsError(f"{key}.kind: {fmt} items are code, not {kind}")
    unknown = sorted(set(fields or {}) - set(FIELD_KEYS))
    if unknown:
        raise EvalItemsError(f"{key}.fields: unknown {', '.join(unknown)} (known: {', '.join(FIELD_KEYS)})")
    window = []
    for name, value in (("date_from", date_from), ("date_to", date_to)):
        try:
            window.append(iso_date(value))
        except ValueError:
            raise EvalItemsError(f"{key}.{name}: {value!r} is not an ISO date (YYYY-MM-DD)") from None
    if window[0] and window[1] and window[0] > window[1]:
        raise EvalItemsError(f"{key}.date_to: {date_to!r} is before date_from {date_from!r}")
    return window[0], window[1]


def read_eval_items(path: str, kind: str, fmt: str = "auto", fields: dict | None = None,
                    date_from: str | None = None, date_to: str | None = None,
                    key: str = "evaluate.benchmarks.0") -> list[EvalItem]:
    """The items of one benchmark (JSONL, Parquet or a `datasets` save_to_disk folder) inside the date
    window, in file order; unusable rows are items with a bad_reason. `key` names the benchmark in errors."""
    start, end = _check_args(kind, fmt, fields, date_from, date_to, key)
    local = path.removeprefix("file://")
    if not (os.path.exists(local) or "://" in path or any(c in local for c in "*?[")):
        raise EvalItemsError(f"{key}.path: {path!r} does not exist")
    items: list[EvalItem] = []
    try:
        for number, row in enumerate(iter_records(local), start=1):
            if not isinstance(row, Mapping):
                raise ValueError(f"row {number} is not an object")
            if fmt == "auto" and number == 1:
                fmt = detect_format(row)
                if fmt in CODE_FORMATS and kind != "code":
                    raise EvalItemsError(f"{key}.kind: {path!r} holds {fmt} rows, which are code, not {kind}")
            if fmt == "livecodebench":
                items.append(livecodebench_item(row, number))
            elif fmt == "humaneval":
                items.append(humaneval_item(row, number))
            else:
                items.append(plain_item(row, number, kind, fields))
    except EvalItemsError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure becomes one clear message
        raise EvalItemsError(f"{key}.path: cannot read benchmark at {path!r}: {type(err).__name__}: {err}") from None
    if not items:
        raise EvalItemsError(f"{key}.path: benchmark at {path!r} has no items")
    seen: set[str] = set()
    for it in items:
        if it.item_id in seen:
            raise EvalItemsError(f"{key}.path: item id {it.item_id!r} occurs twice in {path!r} (set fields.id)")
        seen.add(it.item_id)
    kept = [it for it in items if in_window(it.date, start, end)]
    if not kept:
        # A window that keeps nothing is a config mistake (a wrong year), not an empty benchmark to score.
        raise EvalItemsError(f"{key}.date_from: no item of {path!r} is dated from {start} to {end}")
    return kept
