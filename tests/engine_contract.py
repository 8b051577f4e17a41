"""The engine contract, as one function every engine's test calls (in-process, or in a subprocess for vLLM).

It returns plain facts (JSON-able) and asserts nothing itself, so the caller's assertions show in pytest.
Also the (conversation, response) items every perplexity scorer's test scores (tests/test_perplexity.py).
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


# --- what the perplexity scorers are asked --------------------------------------------------------

ASK = [{"role": "user", "content": "What is 6 times 7?"}]
ITEMS = [
    (ASK, "<think> 6 times 7 is 42. </think> <answer> The answer is 42. </answer>"),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a poem about the sea."}],
     " Waves roll in,\n\nfoam on the sand."),
    ([{"role": "user", "content": "Sum 1..n in Python."}, {"role": "assistant", "content": "Which n?"},
      {"role": "user", "content": "Any n from stdin."}],
     "def solve(n):\n    return sum(range(n + 1))\n\nprint(solve(int(input())))"),
    (ASK, "42"),
    ([{"role": "user", "content": "Explain respiration " * 6}], "The mitochondria produce most of the energy. " * 3),
]
# vLLM scores these with a window of 90 tokens: it cuts the code item (98 tokens with its prompt) and leaves
# the others (65-84) whole, so the truncation rule is compared too.
VLLM_PERPLEXITY_ITEMS = [ITEMS[0], ITEMS[1], ITEMS[2], ITEMS[4], (ASK, "")]
VLLM_PERPLEXITY_WINDOW = 90
# Long responses under a small token budget (score.perplexity.token_budget): each is hundreds of tokens, so
# vLLM computes its prompt log-probs over many engine steps of at most VLLM_BUDGET tokens, two sequences a
# call; the perplexities must still be transformers' over the whole sequence.
VLLM_BUDGET = 64
VLLM_LONG_ITEMS = [(ASK, "<think> " + "6 times 7 is 42, and 7 times 6 is 42 as well. " * 18 + "</think> 42"),
                   (ITEMS[4][0], "The mitochondria produce most of the energy. " * 40),
                   (ITEMS[2][0], "def solve(n):\n    return sum(range(n + 1))\n\n" * 20)]
