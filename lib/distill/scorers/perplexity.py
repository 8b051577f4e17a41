"""Perplexity of a response given its prompt, over the response tokens only.

    scorer = TransformersScorer(model_path)                       # or VllmScorer(model_path, engine_args)
    results = scorer.score([(messages, response), ...])           # one PerplexityResult per item, in order

The conversation is rendered with the scoring model's own chat template (generation prompt included), the
response follows it, and each response token is scored given everything before it: prompt tokens are
context, never scored. ppl = exp(-mean log p(response token | prefix)). Only the response text is scored:
no end-of-turn token is appended, so the score does not depend on how a template closes a turn.

Both scorers take their token ids from `render`, so for one model they score identical sequences and differ
only by numerics (transformers computes the log-probs itself; vLLM returns them as prompt log-probs).

Length: a sequence longer than `max_tokens` is cut to its first `max_tokens` tokens and the result is marked
`truncated`: the prompt stays whole, so the score is still "given the prompt", over the response's head. A
prompt that alone fills the window leaves nothing to score (error "prompt_too_long").
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

VERSION = "1"

Item = tuple[list[dict], str]  # (conversation messages without the response, assistant response text)


@dataclass
class PerplexityResult:
    ppl: float
    n_response_tokens: int
    mean_logprob: float
    truncated: bool = False
    error: str | None = None


def failed(error: str, truncated: bool = False) -> PerplexityResult:
    return PerplexityResult(math.nan, 0, math.nan, truncated, error)


def perplexity_from_logprobs(logprobs: Sequence[float]) -> float:
    """exp(-mean(logprobs)); nan for no tokens (a perplexity over nothing is undefined, not 1)."""
    if not logprobs:
        return math.nan
    return math.exp(-math.fsum(logprobs) / len(logprobs))


def result_from_logprobs(logprobs: Sequence[float], truncated: bool) -> PerplexityResult:
    mean = math.fsum(logprobs) / len(logprobs)
    return PerplexityResult(math.exp(-mean), len(logprobs), mean, truncated)


def render(tokenizer, messages: list[dict], response: str) -> tuple[list[int], int]:
    """Token ids of `messages` rendered with the chat template plus `response`, and where the response starts.

    The prompt (template with the generation prompt) and the response are tokenized separately and
    concatenated. Tokenizing the joined text instead would let BPE merge across the boundary (the template's
    trailing "\\n" with a response's leading whitespace, say) into a token that belongs to both, and the
    boundary would then be neither exact nor the token sequence a model emits after that prompt.
    No special tokens are added: the template already holds the ones the model expects.
    """
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return list(prompt_ids) + list(response_ids), len(prompt_ids)


@dataclass
class _Prepared:
    ids: list[int]
    start: int  # first response token that gets a score (>= 1: token 0 has no context to be scored on)
    truncated: bool


def prepare(tokenizer, item: Item, max_tokens: int) -> _Prepared | PerplexityResult:
    """Render and cut one item to the window, or the result that says why it cannot be scored."""
    messages, response = item
    if not response:
        return failed("empty_response")
    try:
        ids, start = render(tokenizer, messages, response)
    except Exception as err:  # noqa: BLE001 - a malformed conversation fails its own item only
        return failed(f"render: {type(err).__name__}: {str(err)[:300]}")
    if len(ids) == start:  # a non-empty text that tokenizes to nothing
        return failed("empty_response")
    truncated = len(ids) > max_tokens
    ids = ids[:max_tokens]
    start = max(start, 1)
    if start >= len(ids):
        return failed("prompt_too_long", truncated)
    return _Prepared(ids, start, truncated)


def prepare_all(tokenizer, items: Sequence[Item], max_tokens: int):
    """(results, todo): results[i] is already set for items that cannot be scored; todo lists (i, prepared)."""
    results: list[PerplexityResult | None] = [None] * len(items)
    todo: list[tuple[int, _Prepared]] = []
    for i, item in enumerate(items):
        p = prepare(tokenizer, item, max_tokens)
        if isinstance(p, PerplexityResult):
            results[i] = p
        else:
            todo.append((i, p))
    return results, todo


class TransformersScorer:
    """Scores with a transformers causal LM: right-padded batches, log-probs gathered from the logits."""

    name = "transformers"

    def __init__(self, model_path: str | Path, device: str = "cpu", dtype: str = "float32", batch_size: int = 8,
                 max_tokens: int | None = None):
        if not Path(model_path).exists():
            raise FileNotFoundError(f"perplexity: model path {str(model_path)!r} does not exist")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch, self.device, self.batch_size = torch, device, max(1, batch_size)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype).to(device).eval()
        self.max_tokens = max_tokens or self.model.config.max_position_embeddings
        pad = self.tokenizer.pad_token_id
        # Pad positions are masked and never read, so any id works when the tokenizer names no pad token.
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        # Logits are batch x length x vocab floats (GBs for a 150k vocabulary); asking only for the positions
        # from the earliest response start on spares the prompts' share, where the model supports it.
        self._keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def _batch(self, batch: list[_Prepared]) -> list[PerplexityResult]:
        torch = self.torch
        width = max(len(p.ids) for p in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, p in enumerate(batch):  # right padding: real tokens keep positions 0..len-1
            input_ids[row, : len(p.ids)] = torch.tensor(p.ids)
            mask[row, : len(p.ids)] = 1
        # logits at position t - 1 predict token t, so the first needed position is min(start) - 1
        first = min(p.start for p in batch) - 1
        kwargs = {"logits_to_keep": width - first} if self._keep else {}
        offset = first if self._keep else 0
        with torch.no_grad():
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                **kwargs).logits
        out = []
        for row, p in enumerate(batch):
            targets = torch.tensor(p.ids[p.start :], device=logits.device)
            rows = logits[row, p.start - 1 - offset : len(p.ids) - 1 - offset].float()
            lps = torch.log_softmax(rows, dim=-1).gather(-1, targets[:, None])[:, 0]
            out.append(result_from_logprobs(lps.double().tolist(), p.truncated))
        return out

    def score(self, items: Sequence[Item]) -> list[PerplexityResult]:
        results, todo = prepare_all(self.tokenizer, items, self.max_tokens)
        # Longest first: similar lengths share a batch (less padding), and a batch too big for memory fails first.
        todo.sort(key=lambda t: -len(t[1].ids))
        for b in range(0, len(todo), self.batch_size):
            chunk = todo[b : b + self.batch_size]
            try:
                scored = self._batch([p for _, p in chunk])
            except Exception as err:  # noqa: BLE001 - the batch fails as a whole; record, don't sink the task
                scored = [failed(f"transformers: {type(err).__name__}: {str(err)[:300]}", p.truncated)
                          for _, p in chunk]
            for (i, _), r in zip(chunk, scored, strict=True):
                results[i] = r
        return results  # type: ignore[return-value]

    def close(self) -> None:
        del self.model


class VllmScorer:
    """Scores through vLLM's prompt log-probs: each rendered sequence is a prompt that generates one token."""

    name = "vllm"

    def __init__(self, model_path: str | Path, engine_args: dict, max_tokens: int | None = None, llm=None,
                 token_budget: int = 8192, batch_size: int = 8):
        """`llm`: a vllm.LLM already serving `model_path` (a generator's, VllmEngine.llm) to score with,
        instead of starting another engine (`engine_args` and the budget are then that engine's).

        Memory at 32k tokens: prompt log-probs need the logits of every prompt token, tokens x vocabulary
        floats (32k x 152k x 4 B = 20 GB for one response if computed at once). The engine is started with
        chunked prefill and `max_num_batched_tokens = token_budget`, so it computes at most `token_budget`
        tokens' logits per step however long a response is (8192 x 152k x 4 B = 5 GB), and `max_num_seqs =
        batch_size`; each generate call gets at most `batch_size` sequences, so the log-probs vLLM returns
        (Python objects, one per token) stay bounded too. engine_args may still set any of these itself."""
        # In-process engine core: no spawned process (which would need a __main__ guard inside Spark's worker).
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        if not Path(model_path).exists():
            raise FileNotFoundError(f"perplexity: model path {str(model_path)!r} does not exist")
        from transformers import AutoTokenizer

        if llm is None:
            from vllm import LLM

            budget = {"enable_chunked_prefill": True, "max_num_batched_tokens": token_budget,
                      "max_num_seqs": batch_size}
            llm = LLM(model=str(model_path), **{**budget, **engine_args})
        self.llm, self.batch_size = llm, max(1, batch_size)
        # The same tokenizer TransformersScorer loads, so `render` gives both scorers the same ids.
        self.tokenizer = AutoTokenizer.from_pretrained(engine_args.get("tokenizer") or model_path)
        # vLLM refuses a prompt that leaves no room for the one token each request must generate.
        window = self.llm.llm_engine.model_config.max_model_len - 1
        self.max_tokens = min(max_tokens, window) if max_tokens else window

    def _generate(self, batch: list[_Prepared]) -> list[PerplexityResult]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        outs = self.llm.generate([{"prompt_token_ids": p.ids} for p in batch], params, use_tqdm=False)
        results = []
        for p, out in zip(batch, outs, strict=True):
            # prompt_logprobs[t] holds log p(token t | tokens < t), keyed by token id (the actual token always
            # among them); entry 0 is None.
            lps = [out.prompt_logprobs[t][p.ids[t]].logprob for t in range(p.start, len(p.ids))]
            results.append(result_from_logprobs(lps, p.truncated))
        return results

    def score(self, items: Sequence[Item]) -> list[PerplexityResult]:
        results, todo = prepare_all(self.tokenizer, items, self.max_tokens)
        for b in range(0, len(todo), self.batch_size):
            self._score_call(todo[b : b + self.batch_size], results)
        return results  # type: ignore[return-value]

    def _score_call(self, todo: list, results: list) -> None:
        if todo:
            try:
                scored = self._generate([p for _, p in todo])
            except Exception as err:  # noqa: BLE001 - one bad sequence must not sink its batch
                print(f"vllm: a batch of {len(todo)} failed ({type(err).__name__}: {str(err)[:200]}); "
                      "retrying its items one by one", file=sys.stderr)
                scored = []
                for _, p in todo:
                    try:
                        scored.extend(self._generate([p]))
                    except Exception as one:  # noqa: BLE001
                        scored.append(failed(f"vllm: {type(one).__name__}: {str(one)[:300]}", p.truncated))
            for (i, _), r in zip(todo, scored, strict=True):
                results[i] = r

    def close(self) -> None:
        del self.llm
