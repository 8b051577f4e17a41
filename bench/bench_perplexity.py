"""Response perplexity throughput: TransformersScorer called directly on synthetic (conversation, response) pairs.

  .venv/bin/python bench/bench_perplexity.py [--pairs 64] [--min-tokens 200] [--max-tokens 500]
                                             [--batch-sizes 1,8] [--repeat 2] [--model PATH] [--threads N]

Without --model it builds the tiny random Qwen2 (distill.tiny_model) in a temporary folder, so the numbers are
the scorer's own overhead plus a very small forward pass, not a real model's speed. Each pair is a one-turn
conversation whose rendered prompt + response is between min and max tokens (uniformly drawn), most of it
response. Prints one row per batch size: tokens/s counts every token run through the model (prompt and
response), response tok/s only the scored ones; the best of `repeat` runs after one warm-up batch.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

WORDS = ("the answer is step let me work through problem sum range print solve input energy cell train speed "
         "minutes poem sea three lines without commas mitochondria respiration average km think 42 60 80 def "
         "return int main long std cout").split()


def make_pairs(tokenizer, n: int, low: int, high: int, seed: int = 0) -> list[tuple[list[dict], str]]:
    """n pairs whose rendered length lies in [low, high] tokens (near the drawn target; words are 1-4 tokens)."""
    from distill.scorers.perplexity import render

    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        target = rng.randint(low, high)
        question = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))) + "?"
        messages = [{"role": "user", "content": question}]
        _, used = render(tokenizer, messages, "x")
        words = []
        # Byte-level BPE splits before each space, so a " word" costs the same tokens wherever it stands:
        # counting word by word reaches the target without re-tokenizing the whole response each time.
        while used < target:
            word = rng.choice(WORDS)
            used += len(tokenizer(" " + word, add_special_tokens=False)["input_ids"])
            words.append(word)
        pairs.append((messages, " ".join(words)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--min-tokens", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=500)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", default=None, help="a causal LM folder; default: build the tiny model")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()

    import torch
    from distill.scorers.perplexity import TransformersScorer, render
    from distill.tiny_model import build_tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None
    if args.model is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-ppl-"))
        args.model = str(build_tiny_model(tmp / "tiny-qwen2"))
    try:
        scorer = TransformersScorer(args.model)
        pairs = make_pairs(scorer.tokenizer, args.pairs, args.min_tokens, args.max_tokens)
        lengths = [render(scorer.tokenizer, m, r) for m, r in pairs]
        tokens = sum(len(ids) for ids, _ in lengths)
        scored = sum(len(ids) - start for ids, start in lengths)
        print(f"model {Path(args.model).name}: {args.pairs} pairs, {tokens} tokens "
              f"({min(len(i) for i, _ in lengths)}-{max(len(i) for i, _ in lengths)} per pair), "
              f"{scored} response tokens, torch threads {torch.get_num_threads()}")
        print(f"{'batch':>5} {'seconds':>8} {'tokens/s':>9} {'response tok/s':>15} {'pairs/s':>8}")
        for size in (int(s) for s in args.batch_sizes.split(",")):
            scorer.batch_size = size
            scorer.score(pairs[:size])  # warm-up: first-call allocations and kernel choices
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                results = scorer.score(pairs)
                best = min(best, time.perf_counter() - start)
            errors = sum(r.error is not None for r in results)
            print(f"{size:>5} {best:>8.2f} {tokens / best:>9.0f} {scored / best:>15.0f} {len(pairs) / best:>8.1f}"
                  + (f"  ({errors} errors)" if errors else ""))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
