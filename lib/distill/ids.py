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


def model_fingerprint(folder: str, tokenizer_only: bool = False) -> str:
    """What identifies a model folder cheaply: its small files' content, the big ones' names and sizes."""
    from pathlib import Path

    h = hashlib.sha256()
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file():
            continue
        is_tokenizer = p.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template"))
        if tokenizer_only and not is_tokenizer:
            continue
        h.update(p.name.encode())
        h.update(p.read_bytes() if p.stat().st_size < 64 << 20 else str(p.stat().st_size).encode())
    return h.hexdigest()[:32]


def model_identity(model: str) -> str:
    """A model given by path or name, as an id that changes when it does: a folder's fingerprint, a file's
    content hash (a replay file), else the name itself (a served model)."""
    import os

    if os.path.isdir(model):
        return model_fingerprint(model)
    if os.path.isfile(model):
        h = hashlib.sha256()
        with open(model, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:32]
    return model
