"""One vLLM engine on CPU from a tiny model, asked three sets of questions (one engine start, ~40 s, serves
three tests): the raw vLLM facts tests/test_stack.py checks, the engine contract tests/test_engines.py checks
for VllmEngine, and VllmScorer's perplexities tests/test_perplexity.py compares with transformers'. The last
stdout line is {"smoke": {...}, "contract": {...}, "perplexity": [PerplexityResult as a dict, ...]}."""

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: no spawned workers
sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[2] / "lib")]

from distill.engines.vllm_engine import VllmEngine  # noqa: E402
from distill.scorers.perplexity import VllmScorer  # noqa: E402
from vllm import SamplingParams  # noqa: E402

from tests.engine_contract import (  # noqa: E402
    VLLM_BUDGET,
    VLLM_LONG_ITEMS,
    VLLM_PERPLEXITY_ITEMS,
    VLLM_PERPLEXITY_WINDOW,
    contract_facts,
)

engine = VllmEngine(sys.argv[1], {"kv_cache_memory_bytes": 64 * 2**20, "max_model_len": 256, "dtype": "float32"})
llm = engine.llm
greedy = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
first = llm.chat([{"role": "user", "content": "What is 6 times 7?"}], greedy)[0]
again = llm.chat([{"role": "user", "content": "What is 6 times 7?"}], greedy)[0]
scored = llm.generate(["The answer is 42."], SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
smoke = {
    "prompt": first.prompt,
    "tokens": list(first.outputs[0].token_ids),
    "tokens_again": list(again.outputs[0].token_ids),
    "prompt_token_ids": list(scored.prompt_token_ids),
    "prompt_logprobs": [None if lp is None else {str(k): v.logprob for k, v in lp.items()}
                        for lp in scored.prompt_logprobs],
}
contract = contract_facts(engine)
scorer = VllmScorer(sys.argv[1], {}, max_tokens=VLLM_PERPLEXITY_WINDOW, llm=llm)
perplexity = [asdict(r) for r in scorer.score(VLLM_PERPLEXITY_ITEMS)]
del scorer, engine, llm

# the scorer's own engine, under a small token budget: long responses are scored over many engine steps
budget = VllmScorer(sys.argv[1], {"kv_cache_memory_bytes": 64 * 2**20, "max_model_len": 1024, "dtype": "float32"},
                    token_budget=VLLM_BUDGET, batch_size=2)
scheduler = budget.llm.llm_engine.vllm_config.scheduler_config
long = {"perplexity": [asdict(r) for r in budget.score(VLLM_LONG_ITEMS)],
        "max_num_batched_tokens": scheduler.max_num_batched_tokens, "max_num_seqs": scheduler.max_num_seqs,
        "chunked_prefill": scheduler.enable_chunked_prefill}
print(json.dumps({"smoke": smoke, "contract": contract, "perplexity": perplexity, "long": long}))
