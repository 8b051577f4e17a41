"""Benchmark sets for decontamination: read JSONL, Parquet or `datasets` save_to_disk folders into
(item_id, text) rows, on the driver (evaluation sets are thousands of items, not millions).

A file that cannot be read is a BenchmarkError naming the config key: contamination checks that
silently skip a benchmark would be worse than a failed job.
"""

from __future__ import annotations

import os

from distill.config import SourceConfig
from distill.query_filters import prompt_text
from distill.readers import iter_records

TEXT_FIELDS = ("question", "problem", "prompt", "query", "text", "messages")


class BenchmarkError(ValueError):
    pass


def _text(record: dict, field: str | None):
    if field:
        value = record.get(field)
    else:
        value = next((record[f] for f in TEXT_FIELDS if record.get(f) is not None), None)
    if isinstance(value, list):
        return prompt_text(value)
    return value if isinstance(value, str) else None


def read_benchmark(src: SourceConfig, key: str) -> list[tuple[str, str]]:
    """[(item_id, text)] of one benchmark; `key` names it in errors (prepare.decontam.benchmarks.N)."""
    path = src.path.removeprefix("file://")
    if not (os.path.exists(path) or "://" in src.path or any(c in path for c in "*?[")):
        raise BenchmarkError(f"{key}.path: {src.path!r} does not exist")
    items = []
    try:
        for number, record in enumerate(iter_records(path, src.format), start=1):
            if not isinstance(record, dict):
                raise ValueError(f"item {number} is not an object")
            text = _text(record, src.fields.get("text"))
            if not text or not text.strip():
                raise ValueError(f"item {number} has no text (looked in {src.fields.get('text') or TEXT_FIELDS})")
            item_id = record.get(src.fields.get("id", "id"))
            items.append((str(item_id) if item_id is not None else str(number), text))
    except BenchmarkError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure becomes one clear message
        raise BenchmarkError(f"{key}.path: cannot read benchmark {src.name!r} at {src.path!r}: "
                             f"{type(err).__name__}: {err}") from None
    if not items:
        raise BenchmarkError(f"{key}.path: benchmark {src.name!r} at {src.path!r} has no items")
    return items
