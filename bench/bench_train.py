"""Training throughput, side by side in one run: 2 Horovod workers vs 1 process, on the same packed data.

  .venv/bin/python bench/bench_train.py [--samples 256] [--max-len 512] [--steps 12] [--hidden 512]
                                        [--layers 4] [--global-batch 8]

It builds a small random Qwen2 (distill.tiny_model, hidden 512 x 4 layers by default: enough compute per token
that the figures are not all overhead), packs `samples` synthetic conversations into rows of `max-len` tokens,
and trains the same steps three times through distill.training (launcher horovod, started from Spark in
local mode, exactly as the train job does):

  1 process  x 1 torch thread
  2 processes x 1 torch thread each   (Horovod gloo allreduce)
  1 process  x 2 torch threads        (the same cores as the 2-process run)

tokens/s counts every token of the global batch (packed rows, prompts included) over the step's wall time,
steps 3..N (the first two warm up). The scaling ratio is 2-process / 1-process tokens/s: 2.0 would be linear.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

WORDS = ("the answer is step let me work through problem sum range print solve input energy cell train speed "
         "minutes poem sea three lines without commas check so total each cost left over").split()


def write_set(model: Path, n: int, max_len: int, path: Path, seed: int = 0) -> dict:
    import pyarrow as pa
    from distill.training.packing import packed_rows, tokenize
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + "?"
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 250)))
        samples.append(tokenize(tok, [{"role": "user", "content": q}], f"<think>{a}</think><answer>{a[:40]}</answer>"))
    rows, _ = packed_rows(samples, [str(i) for i in range(n)], max_len)
    table = pa.Table.from_pylist([{k: r[k] for k in ("input_ids", "labels", "seq_lens", "loss_tokens")}
                                  for r in rows])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return {"rows": len(rows), "tokens": sum(len(r["input_ids"]) for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--global-batch", type=int, default=8)
    a = parser.parse_args()

    from distill.config import TrainConfig, load_config
    from distill.spark import get_spark
    from distill.tiny_model import build_tiny_model
    from distill.training.launch import launch

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model = build_tiny_model(work / "model", hidden_size=a.hidden, layers=a.layers)
    data = work / "train.arrow"
    figures = write_set(model, a.samples, a.max_len, data)
    print(f"model: hidden {a.hidden} x {a.layers} layers; data: {a.samples} samples -> {figures['rows']} rows, "
          f"{figures['tokens']:,} tokens; {a.steps} steps of {a.global_batch} rows")
    cfg = load_config(None, ["spark.master=local[2]", "spark.conf.spark.ui.enabled=false",
                             "spark.conf.spark.ui.showConsoleProgress=false", f"warehouse={work / 'wh'}"])
    spark = get_spark(cfg)
    base = asdict(TrainConfig(global_batch=a.global_batch, epochs=1000, max_steps=a.steps, lr=1e-3,
                              checkpoint_every=10 ** 6))
    results = {}
    for label, procs, threads in (("1 process x 1 thread", 1, 1), ("2 processes x 1 thread", 2, 1),
                                  ("1 process x 2 threads", 1, 2)):
        out = work / f"run-{procs}-{threads}"
        out.mkdir()
        launch(spark, [{**base, "num_proc": procs, "threads": threads, "student": str(model), "data": str(data),
                        "out_dir": str(out)}])
        steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][2:]
        rate = sum(s["tokens"] for s in steps) / sum(s["seconds"] for s in steps)
        results[label] = rate
        median = statistics.median(s["seconds"] for s in steps)
        print(f"{label:<24} {rate:10,.0f} tokens/s  (median step {median:.2f} s)")
    one, two, one2 = results.values()
    print(f"scaling ratio 2-process / 1-process (1 thread each): {two / one:.2f} (linear: 2.00)")
    print(f"2 processes x 1 thread / 1 process x 2 threads (same cores): {two / one2:.2f}")
    spark.stop()


if __name__ == "__main__":
    main()
