"""Score (conversation, response) items with VllmScorer on CPU; print JSON results for tests/test_perplexity.py.

    vllm_perplexity.py MODEL_PATH ITEMS_JSON [--max-tokens N] [--max-model-len N]

ITEMS_JSON holds a list of [messages, response]; the last stdout line is a list of PerplexityResult dicts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine: no spawned workers
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))

from distill.scorers.perplexity import VllmScorer  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("items")
parser.add_argument("--max-tokens", type=int, default=None)
parser.add_argument("--max-model-len", type=int, default=512)
args = parser.parse_args()

items = [(messages, response) for messages, response in json.loads(Path(args.items).read_text())]
scorer = VllmScorer(args.model, {"kv_cache_memory_bytes": 64 * 2**20, "max_model_len": args.max_model_len,
                                 "dtype": "float32", "seed": 0}, max_tokens=args.max_tokens)
results = scorer.score(items)
print(json.dumps([asdict(r) for r in results]))
