"""The engine interface: conversations in, completions out.

Every teacher (and every LLM judge) runs behind this one call, whatever serves it: vLLM in-process,
an OpenAI-compatible endpoint, transformers, or replay of responses that already exist. An engine
never raises for one bad request: a request it could not serve comes back with `error` set, so the
caller can record it and try again later instead of losing the rest of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from distill.config import SamplingConfig


@dataclass
class Request:
    key: str  # stable identity, e.g. "<query_id>/<teacher>/<attempt>"; replay and logs use it
    messages: list[dict[str, str]]  # [{"role": ..., "content": ...}], system prompt included
    seed: int  # per attempt: a retried task reproduces the same attempt
    # How to sample this request. It belongs to the request, not to the loaded engine: one loaded model
    # serves a student's training-time and evaluation settings, or two temperatures, without reloading.
    sampling: SamplingConfig
    # What replay matches on (the input's own id, and the query's text); other engines ignore them.
    query_id: str | None = None
    source_id: str | None = None
    attempt: int = 0


@dataclass
class Completion:
    text: str | None
    finish_reason: str | None = None  # "stop" | "length" | ...; None when unknown
    tokens_in: int | None = None
    tokens_out: int | None = None
    seconds: float = 0.0  # engine wall time spent on this request (a batch's time is shared out)
    error: str | None = None  # set when the request could not be served; text is None then
    # A replayed release's own verify score for this response (replay, shape am-release); None elsewhere.
    release_score: float | None = None


class Engine(Protocol):
    name: str  # "vllm" | "openai" | "transformers" | "replay"

    def generate(self, requests: Sequence[Request]) -> list[Completion]: ...

    def close(self) -> None: ...


class EngineError(RuntimeError):
    """An engine cannot start (a missing model path, bad settings): the job stops with this message."""
