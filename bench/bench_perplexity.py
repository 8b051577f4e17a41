"""Response perplexity throughput, side by side in one run: TransformersScorer called directly in this process
vs the same scorer through Spark (distill.stages.score.score_rows, the score job's stage) on the same pairs.

  .venv/bin/python bench/bench_perplexity.py [--pairs 512] [--min-tokens 200] [--max-tokens 500]
                                             [--batch-size 8] [--repeat 2] [--model PATH]
                                             [--device cuda --dtype bfloat16 --direct-only]

Without --model it builds the tiny random Qwen2 (distill.tiny_model) in a temporary folder, so the numbers are
the scorer's own overhead plus a very small forward pass, not a real model's speed. Each pair is a one-turn
conversation whose rendered prompt + response is between min and max tokens (uniformly drawn), most of it
response. Direct: one process, torch threads = cores. Spark: local[cores], one task and one torch thread per
core, the model loaded once per Python worker (a warm-up pass loads it; the timed pass reuses the workers); its
stage also runs the structure and repetition scorers, as the job does. tokens/s counts every token run through
the model; the figure to watch is the ratio spark/direct (goal >= 0.8). Best of `repeat` timed runs each.
`--direct-only --device cuda` is the GPU measurement of the scorer alone (no Spark).
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
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--min-tokens", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", default=None, help="a causal LM folder; default: build the tiny model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--direct-only", action="store_true", help="measure the scorer alone, without Spark")
    args = parser.parse_args()

    import os

    import torch
    from distill.config import load_config
    from distill.scorers.perplexity import TransformersScorer, render
    from distill.spark import cores_per_task, get_spark
    from distill.stages.score import ScoreSpec, score_rows
    from distill.tiny_model import build_tiny_model

    cores = os.cpu_count() or 1
    tmp = None
    if args.model is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-ppl-"))
        args.model = str(build_tiny_model(tmp / "tiny-qwen2"))
    try:
        torch.set_num_threads(cores)
        scorer = TransformersScorer(args.model, args.device, args.dtype, batch_size=args.batch_size)
        pairs = make_pairs(scorer.tokenizer, args.pairs, args.min_tokens, args.max_tokens)
        tokens = sum(len(render(scorer.tokenizer, m, r)[0]) for m, r in pairs)
        print(f"model {Path(args.model).name}: {len(pairs)} pairs, {tokens} tokens, batch size {args.batch_size}, "
              f"{cores} cores, {args.device} {args.dtype}")

        scorer.score(pairs[: args.batch_size])  # warm-up
        direct = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            want = scorer.score(pairs)
            direct = min(direct, time.perf_counter() - start)
        scorer.close()
        print(f"  direct (1 process, {cores} torch threads): {direct:7.2f} s  {tokens / direct:9,.0f} tokens/s")
        if args.direct_only:
            return

        spark = get_spark(load_config(None, [f"spark.master=local[{cores}]",
                                             "spark.conf.spark.ui.showConsoleProgress=false"]))
        spec = ScoreSpec({"model": str(Path(args.model).resolve()), "engine": "transformers",
                          "device": args.device, "dtype": args.dtype, "batch_size": args.batch_size,
                          "max_tokens": 32768,
                          "engine_args": {}, "threads": 0, "build_tiny_from": []}, None, 20, cores_per_task(spark))
        df = spark.createDataFrame(
            [(f"q{i}", "t", 1, m, r, "stop") for i, (m, r) in enumerate(pairs)],
            "query_id string, teacher string, attempt int, messages array<struct<role:string,content:string>>, "
            "response string, finish_reason string").repartition(cores).cache()
        df.count()
        score_rows(df, spec, 0).write.format("noop").mode("overwrite").save()  # warm-up: load the model per worker
        through = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            got = {r["query_id"]: r["ppl"] for r in score_rows(df, spec, 0).select("query_id", "ppl").collect()}
            through = min(through, time.perf_counter() - start)
        worst = max(abs(got[f"q{i}"] - w.ppl) / w.ppl for i, w in enumerate(want))
        print(f"  spark  ({cores} tasks, 1 thread each):     {through:7.2f} s  {tokens / through:9,.0f} tokens/s")
        print(f"  ratio spark/direct throughput = {direct / through:.2f}  (largest relative ppl difference "
              f"{worst:.1e})")
        spark.stop()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
