"""transformers: batched `generate` for small models, where vLLM is not at hand.

Prompts are rendered with the tokenizer's chat template and left-padded into batches. Sampling with a
temperature above 0 seeds torch from the batch's request seeds, so the same batch (a retried Spark task
sees the same partition) reproduces the same completions; greedy decoding needs no seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from distill.engines.base import Completion, EngineError, Request
from distill.ids import canonical_json


@dataclass
class TransformersOptions:
    device: str = "cpu"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    batch_size: int = 8


class TransformersEngine:
    name = "transformers"

    def __init__(self, model: str, options: TransformersOptions):
        if not Path(model).exists():
            raise EngineError(f"transformers: model path {model!r} does not exist (models are never downloaded)")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch, self.options = torch, options
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = "auto" if options.dtype == "auto" else getattr(torch, options.dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(options.device).eval()

    def _batch(self, requests: Sequence[Request]) -> list[Completion]:
        """One generate() call: the requests share their sampling (see `generate`)."""
        torch, s, tok = self.torch, requests[0].sampling, self.tokenizer
        texts = [tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in requests]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.options.device)
        sample = s.temperature > 0
        if sample:
            torch.manual_seed(hash(tuple(r.seed for r in requests)) % 2**63)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(
                **enc, max_new_tokens=s.max_tokens, do_sample=sample, pad_token_id=tok.pad_token_id,
                **({"temperature": s.temperature, "top_p": s.top_p} if sample else {}),
                **({"top_k": s.top_k} if sample and s.top_k > 0 else {}), **s.extra)
        share = (time.perf_counter() - start) / len(requests)
        width = enc["input_ids"].shape[1]
        completions = []
        for i in range(len(requests)):
            ids = out[i, width:].tolist()
            finish = "length"
            if tok.eos_token_id in ids:
                ids, finish = ids[: ids.index(tok.eos_token_id) + 1], "stop"
            text = tok.decode(ids, skip_special_tokens=True)
            completions.append(Completion(text, finish, int(enc["attention_mask"][i].sum()), len(ids), share))
        return completions

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        # model.generate() takes one set of sampling settings: requests are batched with their like, in order.
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(canonical_json(vars(r.sampling)), []).append(i)
        out: list[Completion | None] = [None] * len(requests)
        size = max(1, self.options.batch_size)
        for members in groups.values():
            for start in range(0, len(members), size):
                batch = members[start : start + size]
                try:
                    done = self._batch([requests[i] for i in batch])
                except Exception as err:  # noqa: BLE001 - the batch fails as a whole; record, don't sink the task
                    done = [Completion(None, error=f"transformers: {type(err).__name__}: {str(err)[:300]}")
                            for _ in batch]
                for i, completion in zip(batch, done, strict=True):
                    out[i] = completion
        return out

    def close(self) -> None:
        del self.model
