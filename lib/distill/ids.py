"""Deterministic ids: the same input always gets the same id, so re-runs MERGE instead of duplicating."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spacing, unicode kept."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def stable_id(*parts: str) -> str:
    """128-bit hex id of the parts. 128 bits keep collisions negligible at billions of rows."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:32]


def query_id(source: str, source_id: str | None, content: dict) -> str:
    """A query's id: from the source's own id when it has one, else from its content.

    The source name is part of both, so two sources may reuse the same ids; identical content from
    two sources is two rows here and is deduplicated (with a reason) by `prepare`.
    """
    if source_id is not None:
        return stable_id("id", source, source_id)
    return stable_id("content", source, canonical_json(content))


def content_hash(content: dict) -> str:
    return stable_id("content", canonical_json(content))
