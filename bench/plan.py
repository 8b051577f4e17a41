"""A scale model: GPU-hours and wall time per stage for N queries x T teachers on G GPUs.

  .venv/bin/python bench/plan.py [--queries 1890000] [--teachers 3] [--gpus 64] [--warehouse DIR]
                                 [--set gen_tokens_per_s=2500 ...]

Each stage's work follows from the data's shape (attempts per (query, teacher) pair, output tokens per attempt,
the share of pairs accepted and kept) and its time from a throughput per GPU:

  prepare   embed every query once (semantic decontamination)           texts / (embed texts/s)
  generate  N x T x attempts-per-pair responses, regenerated to >= 0.9   output tokens / (teacher tokens/s)
  verify    every attempt, on CPUs (math-verify, sandbox, IFEval)        attempts x core-s / cores
  score     perplexity of every accepted response (a forward pass)      tokens / (scorer tokens/s)
  train     one student per teacher on its kept rows, `epochs` times    tokens x epochs / (train tokens/s)
  evaluate  every student on the benchmarks, `samples` per item         output tokens / (student tokens/s)

The defaults are the paper's scale (1.89M queries, 3 teachers, 32B students) with ASSUMED throughputs for
one H200 and an ASSUMED data shape: none of them is a measurement from this project (no GPU was measured).
`--warehouse DIR` replaces the data's shape with what a real ledger holds (attempts and sft of a run of this
pipeline), and `--set key=value` replaces any assumption, e.g. throughputs measured on your own nodes with
bench/device/check.sh or read from a pilot run's `runs` and `attempts` (tokens_out / gen_seconds).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Training throughput from the usual 6 x parameters FLOPs per token (forward + backward) at a model FLOPs
# utilisation: H200 bf16 dense peak 989 TFLOP/s, MFU 0.40, 32.8B parameters -> ~2,000 tokens/s per GPU.
H200_BF16_FLOPS = 989e12


@dataclass(frozen=True)
class Assumptions:
    # the data's shape (per teacher alike unless --warehouse measures it)
    attempts_per_pair: float = 1.3        # regenerations until >= 0.9, capped by generate.max_attempts
    accepted_share: float = 0.90          # pairs with an accepted attempt
    kept_share: float = 0.93              # accepted pairs that curate keeps
    output_tokens: float = 5000.0         # per attempt (think + answer); long-reasoning teachers write more
    prompt_tokens: float = 300.0          # per query (system prompt + conversation)
    # throughputs per GPU (one H200), assumed
    embed_texts_per_s: float = 1500.0     # bge-m3 on short queries
    gen_tokens_per_s: float = 2500.0      # teacher decoding with vLLM, large batches (a 32B dense teacher)
    score_tokens_per_s: float = 20000.0   # perplexity forward pass (prefill only) of the reference model
    student_params: float = 32.8e9        # Qwen2.5-32B
    mfu: float = 0.40                     # training model FLOPs utilisation
    student_gen_tokens_per_s: float = 2500.0
    # CPU and the run
    verify_core_seconds: float = 0.5      # per attempt, averaged over math (ms) and code (seconds, sandboxed)
    cpu_cores: int = 1024
    epochs: float = 2.0
    eval_items: int = 2000                # benchmark items across the evaluation sets
    eval_samples: int = 16                # samples per item (pass@1 averaged over them)
    eval_output_tokens: float = 8000.0

    @property
    def train_tokens_per_s(self) -> float:
        return self.mfu * H200_BF16_FLOPS / (6 * self.student_params)


def plan(n: int, teachers: int, gpus: int, a: Assumptions) -> list[dict]:
    """One row per stage: its work, the throughput per GPU, GPU-hours (CPU core-hours for verify), and wall
    hours with every GPU (or core) busy."""
    pairs = n * teachers
    attempts = pairs * a.attempts_per_pair
    accepted = pairs * a.accepted_share
    kept = accepted * a.kept_share
    rows = [
        ("prepare", n, "texts", a.embed_texts_per_s),
        ("generate", attempts * a.output_tokens, "tokens", a.gen_tokens_per_s),
        ("score", accepted * (a.prompt_tokens + a.output_tokens), "tokens", a.score_tokens_per_s),
        ("train", kept * (a.prompt_tokens + a.output_tokens) * a.epochs, "tokens", a.train_tokens_per_s),
        ("evaluate", teachers * a.eval_items * a.eval_samples * a.eval_output_tokens, "tokens",
         a.student_gen_tokens_per_s),
    ]
    out = []
    for stage, work, unit, per_gpu in rows:
        hours = work / per_gpu / 3600
        out.append({"stage": stage, "work": work, "unit": unit, "per_gpu_s": per_gpu, "gpu_hours": hours,
                    "wall_hours": hours / gpus, "device": "GPU"})
    core_hours = attempts * a.verify_core_seconds / 3600
    out.insert(2, {"stage": "verify", "work": attempts, "unit": "attempts", "per_gpu_s": 1 / a.verify_core_seconds,
                   "gpu_hours": core_hours, "wall_hours": core_hours / a.cpu_cores, "device": "CPU core"})
    return out


def measured_shape(warehouse: str) -> dict[str, float]:
    """The data's shape from a real ledger: attempts per pair, accepted and kept shares, mean output tokens per
    attempt and prompt tokens per query (all teachers together). An engine that reports no token counts
    (replay) leaves tokens_out empty: the response's tokens in the student's tokenizer (sft.n_tokens) stand in,
    and prompt tokens stay assumed."""
    sys.path.insert(0, str(ROOT / "lib"))
    from distill.config import load_config
    from distill.spark import get_spark
    from distill.tables import register_tables

    cfg = load_config(None, [f"warehouse={Path(warehouse).resolve()}", "spark.conf.spark.ui.enabled=false"])
    spark = get_spark(cfg)
    register_tables(spark, cfg)
    row = spark.sql("""
        SELECT count(*) / count(DISTINCT query_id, teacher) AS attempts_per_pair,
               count(DISTINCT CASE WHEN accepted THEN concat(query_id, teacher) END)
                 / count(DISTINCT query_id, teacher) AS accepted_share,
               avg(tokens_out) AS output_tokens, avg(tokens_in) AS prompt_tokens
        FROM attempts""").first().asDict()
    kept, n_tokens = spark.sql(
        "SELECT avg(CAST(coalesce(keep, false) AS DOUBLE)), avg(n_tokens) FROM sft").first()
    if row["output_tokens"] is None:
        row["output_tokens"] = n_tokens
    return {**{k: float(v) for k, v in row.items() if v is not None}, "kept_share": float(kept or 0.0)}


def parse_sets(items: list[str]) -> dict[str, float]:
    known = {f.name: f.type for f in fields(Assumptions)}
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in known:
            sys.exit(f"--set {key}: unknown assumption (known: {', '.join(sorted(known))})")
        try:
            out[key] = int(value) if known[key] in (int, "int") else float(value)
        except ValueError:
            sys.exit(f"--set {key}: {value!r} is not a number")
    return out


def render(rows: list[dict], n: int, teachers: int, gpus: int, a: Assumptions, shape_from: str) -> str:
    lines = [f"{n:,} queries x {teachers} teachers on {gpus} GPUs ({a.cpu_cores} CPU cores for verify); "
             f"data shape: {shape_from}",
             "", "| stage | work | per GPU | GPU-hours | wall hours |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        per = f"{r['per_gpu_s']:,.0f} {r['unit']}/s" + (" per core" if r["device"] == "CPU core" else "")
        hours = f"{r['gpu_hours']:,.{0 if r['gpu_hours'] >= 10 else 1}f}" + (
            " core-h" if r["device"] == "CPU core" else "")
        lines.append(f"| {r['stage']} | {r['work']:.3g} {r['unit']} | {per} | {hours} | {r['wall_hours']:,.1f} |")
    gpu_rows = [r for r in rows if r["device"] == "GPU"]
    lines.append(f"| **all GPU stages** | | | **{sum(r['gpu_hours'] for r in gpu_rows):,.0f}** | "
                 f"**{sum(r['wall_hours'] for r in gpu_rows):,.1f}** |")
    lines += ["", "assumptions: " + ", ".join(f"{k}={v:g}" for k, v in asdict(a).items()),
              f"train tokens/s per GPU = mfu x {H200_BF16_FLOPS:.3g} / (6 x student_params) = "
              f"{a.train_tokens_per_s:,.0f}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=1_890_000)
    parser.add_argument("--teachers", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--warehouse", help="take the data's shape from this warehouse's attempts and sft")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                        help="replace an assumption (see Assumptions in this file)")
    args = parser.parse_args(argv)
    a = replace(Assumptions(), **parse_sets(args.sets))
    shape_from = "assumed"
    if args.warehouse:
        a = replace(a, **measured_shape(args.warehouse))
        shape_from = f"measured in {args.warehouse}"
    print(render(plan(args.queries, args.teachers, args.gpus, a), args.queries, args.teachers, args.gpus, a,
                 shape_from))


if __name__ == "__main__":
    main()
