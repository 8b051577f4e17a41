"""The engine contract, as one function every engine's test calls (in-process, or in a subprocess for vLLM).

It returns plain facts (JSON-able) and asserts nothing itself, so the caller's assertions show in pytest.
"""

from __future__ import annotations

from dataclasses import replace

from distill.config import SamplingConfig
from distill.engines.base import Request

SAMPLING = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=8, seed=0)
SHORT = SamplingConfig(temperature=0.0, max_tokens=2)  # one request's own settings in a mixed batch

CONVERSATIONS = [
    [{"role": "user", "content": "What is 6 times 7?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime number."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
     {"role": "user", "content": "Write one line of code."}],
]


def requests(seed: int = 7) -> list[Request]:
    return [Request(key=f"q{i}/t/1", messages=m, seed=seed + i, sampling=SAMPLING, query_id=f"q{i}", attempt=1)
            for i, m in enumerate(CONVERSATIONS)]


def contract_facts(engine, reqs: list[Request] | None = None) -> dict:
    reqs = reqs or requests()
    empty = engine.generate([])
    first = engine.generate(reqs)
    again = engine.generate(reqs)
    # Sampling belongs to the request: one engine serves a batch whose middle request asks for 2 greedy tokens.
    mixed = engine.generate([reqs[0], replace(reqs[1], sampling=SHORT), reqs[2]])
    return {
        "name": engine.name,
        "empty": len(empty),
        "n": len(first),
        "texts": [c.text for c in first],
        "texts_again": [c.text for c in again],
        "errors": [c.error for c in first],
        "finish": [c.finish_reason for c in first],
        "tokens_in": [c.tokens_in for c in first],
        "tokens_out": [c.tokens_out for c in first],
        "seconds": [c.seconds for c in first],
        "mixed_tokens_out": [c.tokens_out for c in mixed],
        "mixed_errors": [c.error for c in mixed],
    }
