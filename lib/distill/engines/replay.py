"""Replay: responses read from data that already exists, served through the engine interface.

This is how the embedded default runs with no GPU (the bundled sample's pre-generated responses), and
how users re-verify and re-filter a released distillation dataset without regenerating it.

A response row is matched to a request by the query's id (`match: id`: the row's `source` and `id`
give the same query id ingest gave the query) or by the query's normalized text (`match: text`: the
last user message, compared case-, width- and space-insensitively). A row's `attempt` number says which
attempt it answers; rows without one are numbered 1, 2, … in file order per query. Two row shapes are
read: `{id, source?, attempt?, response, finish_reason?, tokens_out?}` and chat exports
`{messages: [..., {"role": "assistant", "content": response}]}`; other field names map via `fields`.
`shape: am-release` reads the a-m-team releases' rows instead (distill.release_shape): the response is the
last assistant turn's, the release's own verify score comes back as `Completion.release_score`, and `match: id`
gives each row the query id ingest gives it as source `source` with category `category` (unset: any category,
for a folder of a release's files read by ingest sources of one name).
A request for an attempt the data does not have comes back with `error` = "replay: no response …",
so the pair stops there.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from distill.config import CATEGORIES
from distill.engines.base import Completion, EngineError, Request
from distill.ids import query_id
from distill.readers import iter_records
from distill.textsig import text_hash

NO_RESPONSE = "replay: no response"


@dataclass
class ReplayOptions:
    match: Literal["id", "text"] = "id"
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    source: str | None = None  # source name for rows that carry no `source` (id matching)
    # normalized name -> field name in the data: id, source, attempt, response, finish_reason, tokens_out,
    # query (the prompt text, for text matching), messages. With shape am-release: the release's field names
    # (distill.release_shape.FIELDS).
    fields: dict[str, str] = field(default_factory=dict)
    # "am-release": rows of the a-m-team releases; with match id, `source` (and `category`, else any) are those
    # of the ingest source that read the same file, so each row finds the query ingest made of it.
    shape: Literal["default", "am-release"] = "default"
    category: str | None = None

    def __post_init__(self) -> None:
        if self.shape == "am-release":
            from distill.release_shape import check_fields

            check_fields(self.fields)
            if self.category is not None and self.category not in CATEGORIES:
                raise ValueError(f"category: {self.category!r} is not one of {', '.join(CATEGORIES)}")
            if self.match == "id" and self.source is None:
                raise ValueError("source: shape am-release with match id needs the ingest source's name "
                                 "(or use match: text)")


def last_user_text(messages: Sequence[dict]) -> str | None:
    return next((m.get("content") for m in reversed(list(messages)) if m.get("role") == "user"), None)


class ReplayEngine:
    name = "replay"

    def __init__(self, path: str, options: ReplayOptions):
        self.options = options
        self.rows: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        try:
            for number, record in enumerate(iter_records(path, options.format), start=1):
                self._add(record, number)
        except (OSError, ValueError) as err:
            raise EngineError(f"replay: cannot read {path!r}: {err}") from None
        if not self.rows:
            raise EngineError(f"replay: no usable response rows in {path!r}")

    def _get(self, record: dict, name: str) -> Any:
        return record.get(self.options.fields.get(name, name))

    def _add(self, record: dict, number: int) -> None:
        if not isinstance(record, dict):
            return
        if self.options.shape == "am-release":
            self._add_release(record, number)
            return
        response, messages = self._get(record, "response"), self._get(record, "messages")
        prompt = self._get(record, "query")
        if response is None and isinstance(messages, list) and messages and messages[-1].get("role") == "assistant":
            response, prompt = messages[-1].get("content"), prompt or last_user_text(messages[:-1])
        if not isinstance(response, str):
            return
        if self.options.match == "id":
            rid, source = self._get(record, "id"), self._get(record, "source") or self.options.source
            if rid is None or source is None:
                return
            key = query_id(str(source), str(rid), {})
        else:
            if prompt is None and isinstance(messages, list):
                prompt = last_user_text(messages)
            if not isinstance(prompt, str):
                return
            key = text_hash(prompt)
        self._store(key, self._get(record, "attempt"), {
            "response": response, "finish_reason": self._get(record, "finish_reason"),
            "tokens_out": self._get(record, "tokens_out"), "line": number})

    def _add_release(self, record: dict, number: int) -> None:
        from distill.release_shape import release_query_ids, release_response

        row = release_response(record, self.options.fields)
        if row is None:
            return
        if self.options.match == "id":
            keys = release_query_ids(record, self.options.source, self.options.category, self.options.fields)
        else:
            text = last_user_text(row["messages"])
            keys = [text_hash(text)] if isinstance(text, str) else []
        for key in keys:
            self._store(key, None, {"response": row["response"], "finish_reason": None, "tokens_out": None,
                                    "line": number, "release_score": row["release_score"]})

    def _store(self, key: str, attempt, row: dict) -> None:
        attempts = self.rows[key]
        attempt = int(attempt) if isinstance(attempt, (int, float)) else len(attempts) + 1
        attempts.setdefault(attempt, row)

    def _key(self, request: Request) -> str | None:
        if self.options.match == "id":
            return request.query_id
        text = last_user_text(request.messages)
        return text_hash(text) if text is not None else None

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        out = []
        for r in requests:
            row = self.rows.get(self._key(r) or "", {}).get(r.attempt)
            if row is None:
                out.append(Completion(None, error=f"{NO_RESPONSE} for attempt {r.attempt}"))
                continue
            tokens = row["tokens_out"]
            out.append(Completion(row["response"], row["finish_reason"] or "stop", None,
                                  int(tokens) if isinstance(tokens, (int, float)) else None, 0.0,
                                  release_score=row.get("release_score")))
        return out

    def close(self) -> None:
        self.rows.clear()
