"""Tokenizers loaded once per Python worker (Spark reuses workers across tasks)."""

from __future__ import annotations

_cache: dict[str, object] = {}


def cached_tokenizer(path: str):
    if path not in _cache:
        from transformers import AutoTokenizer

        _cache[path] = AutoTokenizer.from_pretrained(path)
    return _cache[path]
