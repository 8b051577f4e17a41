"""Peak memory of the training loss: the plain full-logits path against the chunked one, side by side.

  .venv/bin/python bench/bench_loss.py [--tokens 8192] [--vocab 32768] [--hidden 256] [--chunk 4096 2048 1024]

One forward and backward of distill.training.loss.linear_cross_entropy_sum's work on random hidden states
(tokens x hidden) and an LM head (vocab x hidden), float32 on CPU: chunk 0 is the plain path (all logits at
once, as `train.loss_chunk_tokens: 0` does), the others are chunk sizes. Each variant runs in a fresh
process, so its peak resident memory (ru_maxrss) is its own, measured above the process's peak once the inputs
exist. Printed: the peak above the baseline, the loss and gradient check
against the plain path, and the ratio plain / chunked.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))


def one(tokens: int, vocab: int, hidden: int, chunk: int) -> dict:
    import resource
    import time

    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    h = torch.randn(tokens, hidden, requires_grad=True)
    w = (torch.randn(vocab, hidden) / hidden**0.5).requires_grad_()
    y = torch.randint(0, vocab, (tokens,))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if chunk == 0:
        loss = F.cross_entropy((h @ w.T).float(), y, reduction="sum")
    else:
        from distill.training.loss import linear_cross_entropy_sum

        loss = linear_cross_entropy_sum(h, w, None, y, chunk)
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"chunk": chunk, "peak_above_inputs_mib": (peak - base) / 1024, "seconds": seconds,
            "loss": float(loss), "grad_h": float(h.grad.abs().sum()), "grad_w": float(w.grad.abs().sum())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--chunk", type=int, nargs="+", default=[4096, 2048, 1024])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a variant, in its own process
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.tokens, args.vocab, args.hidden, args.one)))
        return

    def run(chunk: int) -> dict:
        out = subprocess.run([sys.executable, __file__, "--tokens", str(args.tokens), "--vocab", str(args.vocab),
                              "--hidden", str(args.hidden), "--one", str(chunk)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    logits_mib = args.tokens * args.vocab * 4 / 2**20
    print(f"{args.tokens} tokens x {args.vocab} vocab x {args.hidden} hidden, float32; one logits tensor: "
          f"{logits_mib:.0f} MiB")
    plain = run(0)
    print(f"  plain (chunk 0):  peak +{plain['peak_above_inputs_mib']:7.0f} MiB  {plain['seconds']:.2f} s  "
          f"loss {plain['loss']:.6g}")
    for chunk in args.chunk:
        r = run(chunk)
        same = all(abs(r[k] - plain[k]) <= 1e-4 * abs(plain[k]) for k in ("loss", "grad_h", "grad_w"))
        print(f"  chunk {chunk:>6}:     peak +{r['peak_above_inputs_mib']:7.0f} MiB  {r['seconds']:.2f} s  "
              f"loss {r['loss']:.6g}  same loss and gradient sums: {same}  "
              f"plain/chunked peak: {plain['peak_above_inputs_mib'] / max(1.0, r['peak_above_inputs_mib']):.1f}x")


if __name__ == "__main__":
    main()
