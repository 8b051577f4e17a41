"""Generation throughput, measured side by side in one run (machines are noisy: compare ratios).

  .venv/bin/python bench/bench_generate.py [--prompts 256] [--max-tokens 384] [--skip-server]

1. Orchestration overhead: output tokens/s of the same prompts with the same tiny model and sampling
   (fixed output length: ignore_eos), through
     direct   `LLM.chat` in this process, the engine loaded and warmed up on the same prompts;
     spark    the generate stage (mapInPandas, the engine cached in the reused Python workers: untimed
              passes load and warm it), staged to Parquet as the job does, with one partition per core
              (--partitions), as the job runs: Spark gives each Python worker one OpenMP thread
              (OMP_NUM_THREADS = spark.task.cpus), so one partition would leave a core idle that the
              direct path uses.
   The goal is spark/direct >= 0.9 once the JVM and the engine are up. `evaluate` generates its samples
   through this very stage (generation.run_rounds -> stages.generate.generate, a FixedSamples rule in
   place of UntilAccepted), so the ratio is also evaluation's generation against direct vLLM.
2. The OpenAI engine's throughput vs max_concurrency against a local vLLM server of the same model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

ENGINE_ARGS = {"kv_cache_memory_bytes": 64 * 2**20, "max_model_len": 1024, "dtype": "float32"}


def prompts(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Question {i}: what is {i} plus {i * 3}? Explain briefly."}]
            for i in range(n)]


def direct(model: str, convs, sampling) -> tuple[float, int]:
    from distill.engines.base import Request
    from distill.engines.vllm_engine import VllmEngine

    engine = VllmEngine(model, ENGINE_ARGS)
    reqs = [Request(f"k{i}", c, seed=i, sampling=sampling) for i, c in enumerate(convs)]
    engine.generate(reqs)  # warm up with the same batch, as the Spark path's untimed second pass does
    start = time.perf_counter()
    out = engine.generate(reqs)
    elapsed = time.perf_counter() - start
    engine.close()
    return elapsed, sum(c.tokens_out for c in out)


def through_spark(model: str, convs, sampling, work: Path, partitions: int) -> tuple[float, int]:
    from distill.config import TeacherConfig, VerifyConfig, load_config
    from distill.spark import get_spark
    from distill.stages import generate as st
    from pyspark.sql import functions as F

    cfg = load_config(None, ["spark.master=local[2]", "spark.conf.spark.ui.enabled=false",
                             "spark.conf.spark.ui.showConsoleProgress=false", f"warehouse={work}/wh"])
    spark = get_spark(cfg)
    rows = [(f"q{i}", None, "general", [(m["role"], m["content"]) for m in c], None, None, None, 1)
            for i, c in enumerate(convs)]
    pairs = spark.createDataFrame(rows, "query_id string, source_id string, category string, "
                                        "messages array<struct<role:string,content:string>>, reference_answer string, "
                                        "test_cases string, constraints string, attempt int")
    teacher = TeacherConfig("t", "vllm", model, ENGINE_ARGS, sampling, system_prompt="")
    spec = st.VerifySpec(json.dumps(dataclasses.asdict(VerifyConfig())), {}, 1, ())  # no inline verification
    out = st.generate(pairs, teacher, batch_size=len(rows), partitions=partitions, verify=spec)
    out.limit(4).write.mode("overwrite").parquet(str(work / "warm"))  # loads the engine in the worker
    out.write.mode("overwrite").parquet(str(work / "warm2"))  # and runs every prompt once (vLLM warm-up)
    start = time.perf_counter()
    out.write.mode("overwrite").parquet(str(work / "timed"))
    elapsed = time.perf_counter() - start
    tokens = spark.read.parquet(str(work / "timed")).agg(F.sum("tokens_out")).first()[0]
    spark.stop()
    return elapsed, int(tokens)


def server_sweep(model: str, convs, sampling, levels) -> list[tuple[int, float, int]]:
    from distill.engines.base import Request
    from distill.engines.openai_engine import OpenAIEngine, OpenAIOptions

    from tests.conftest import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--host", "127.0.0.1",
         "--port", str(port), "--served-model-name", "tiny", "--max-model-len", "1024", "--dtype", "float32",
         "--kv-cache-memory-bytes", str(64 * 2**20)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
        reqs = [Request(f"k{i}", c, seed=i, sampling=sampling) for i, c in enumerate(convs)]
        results = []
        for level in levels:
            engine = OpenAIEngine("tiny", OpenAIOptions(base_url=f"http://127.0.0.1:{port}/v1",
                                                        max_concurrency=level))
            engine.generate(reqs[:2])
            start = time.perf_counter()
            out = engine.generate(reqs)
            results.append((level, time.perf_counter() - start, sum(c.tokens_out or 0 for c in out)))
        return results
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--partitions", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from distill.config import SamplingConfig
    from distill.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    model = str(build_tiny_model(work / "tiny"))
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, seed=0,
                              extra={"ignore_eos": True})
    convs = prompts(args.prompts)
    d_time, d_tokens = direct(model, convs, sampling)
    s_time, s_tokens = through_spark(model, convs, sampling, work, args.partitions)
    print(f"\n{args.prompts} prompts x {args.max_tokens} output tokens, tiny Qwen2 on CPU, "
          f"{os.cpu_count()} cores, {args.partitions} partitions")
    print(f"{'path':<10}{'seconds':>10}{'tokens':>10}{'tokens/s':>12}")
    print(f"{'direct':<10}{d_time:>10.2f}{d_tokens:>10}{d_tokens / d_time:>12.1f}")
    print(f"{'spark':<10}{s_time:>10.2f}{s_tokens:>10}{s_tokens / s_time:>12.1f}")
    print(f"ratio spark/direct (tokens/s) = {(s_tokens / s_time) / (d_tokens / d_time):.2f}   (goal >= 0.9)")
    if not args.skip_server:
        print("\nOpenAI engine vs a local vLLM server")
        print(f"{'concurrency':<12}{'seconds':>10}{'tokens':>10}{'tokens/s':>12}")
        for level, seconds, tokens in server_sweep(model, convs, sampling, [1, 4, 16, 64]):
            print(f"{level:<12}{seconds:>10.2f}{tokens:>10}{tokens / seconds:>12.1f}")


if __name__ == "__main__":
    main()
