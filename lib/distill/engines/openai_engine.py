"""An OpenAI-compatible chat endpoint: a vLLM server fleet (how 671B-class teachers are served) or
any compatible provider.

Requests go out concurrently (at most `max_concurrency` in flight per Spark task) with a per-request
timeout. 429s, 5xx and timeouts / connection errors are retried with exponential backoff (honouring
`Retry-After`); other 4xx are not. A request that still fails comes back with `error` set and is not
recorded as an attempt, so the next run asks again. The API key is read from the environment variable
named by `api_key_env` on the worker and is never put in a table, a log line or an error message.

Servers that split reasoning out (vLLM's reasoning parsers return `reasoning_content`) get it put back
as `<think>…</think><answer>…</answer>`, so every teacher's response has the same shape.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from typing import Sequence

from distill.engines.base import Completion, EngineError, Request

RETRY_STATUS = {408, 409, 429}


@dataclass
class OpenAIOptions:
    base_url: str  # e.g. http://host:8000/v1
    api_key_env: str | None = None  # name of the environment variable holding the key
    max_concurrency: int = 16  # requests in flight per Spark task
    timeout_s: float = 600.0  # per request
    max_retries: int = 5
    backoff_s: float = 1.0  # first retry waits about this long, doubling each time (capped at 60 s)


class OpenAIEngine:
    name = "openai"

    def __init__(self, model: str, options: OpenAIOptions):
        self.model, self.options = model, options
        self.url = options.base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        if options.api_key_env:
            key = os.environ.get(options.api_key_env)
            if not key:
                raise EngineError(f"openai: environment variable {options.api_key_env} (api_key_env) is not set")
            self.headers["Authorization"] = f"Bearer {key}"

    def _body(self, request: Request) -> dict:
        s = request.sampling
        body = {"model": self.model, "messages": request.messages, "temperature": s.temperature, "top_p": s.top_p,
                "max_tokens": s.max_tokens, "seed": request.seed, **s.extra}
        if s.top_k > 0:
            body["top_k"] = s.top_k
        if s.stop:
            body["stop"] = s.stop
        return body

    async def _one(self, client, gate: asyncio.Semaphore, request: Request) -> Completion:
        import httpx

        o = self.options
        last, retry_after = "", None
        for attempt in range(o.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt, retry_after))
            start = time.perf_counter()
            try:
                async with gate:
                    resp = await client.post(self.url, json=self._body(request), headers=self.headers,
                                             timeout=o.timeout_s)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                last, retry_after = type(err).__name__, None
                continue
            if resp.status_code in RETRY_STATUS or resp.status_code >= 500:
                last = f"HTTP {resp.status_code}"
                retry_after = resp.headers.get("retry-after")
                continue
            if resp.status_code >= 400:
                return Completion(None, error=f"openai: HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                return self._parse(resp.json(), time.perf_counter() - start)
            except (ValueError, KeyError, IndexError, TypeError) as err:
                return Completion(None, error=f"openai: unreadable response ({type(err).__name__}: {err})")
        return Completion(None, error=f"openai: gave up after {o.max_retries + 1} tries, last: {last}")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(60.0, float(retry_after))
            except ValueError:
                pass
        base = min(60.0, self.options.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # jitter: a fleet of tasks must not retry in lockstep

    @staticmethod
    def _parse(data: dict, seconds: float) -> Completion:
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning and "<think>" not in text:
            text = f"<think>\n{reasoning.strip()}\n</think>\n<answer>\n{text.strip()}\n</answer>"
        usage = data.get("usage") or {}
        return Completion(text, choice.get("finish_reason"), usage.get("prompt_tokens"),
                          usage.get("completion_tokens"), seconds)

    async def _all(self, requests: Sequence[Request]) -> list[Completion]:
        import httpx

        gate = asyncio.Semaphore(max(1, self.options.max_concurrency))
        limits = httpx.Limits(max_connections=max(1, self.options.max_concurrency))
        async with httpx.AsyncClient(limits=limits) as client:
            return list(await asyncio.gather(*(self._one(client, gate, r) for r in requests)))

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        if not requests:
            return []
        return asyncio.run(self._all(requests))

    def close(self) -> None:
        pass
