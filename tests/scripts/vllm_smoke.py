"""Generate with vLLM on CPU from a tiny model; print JSON facts for tests/test_stack.py."""

import json
import os
import sys

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: no spawned workers

from vllm import LLM, SamplingParams  # noqa: E402

llm = LLM(model=sys.argv[1], kv_cache_memory_bytes=64 * 2**20, max_model_len=256, dtype="float32", seed=0)
greedy = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
first = llm.chat([{"role": "user", "content": "What is 6 times 7?"}], greedy)[0]
again = llm.chat([{"role": "user", "content": "What is 6 times 7?"}], greedy)[0]
scored = llm.generate(["The answer is 42."], SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
print(json.dumps({
    "prompt": first.prompt,
    "tokens": list(first.outputs[0].token_ids),
    "tokens_again": list(again.outputs[0].token_ids),
    "prompt_token_ids": list(scored.prompt_token_ids),
    "prompt_logprobs": [None if lp is None else {str(k): v.logprob for k, v in lp.items()}
                        for lp in scored.prompt_logprobs],
}))
