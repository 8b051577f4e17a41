"""Tokenize conversations with the student's chat template and pack them into fixed-size training rows.

Plain Python (no Spark, no torch): the `train` job runs it inside `mapInPandas`, tests run it directly.

A sample is one conversation plus the teacher's response. Its labels are the token ids on the response and
the template's end-of-turn suffix (so the student learns to stop), and IGNORE (-100) everywhere else:
system and user turns, and any earlier assistant turns of a multi-turn query, which are context written by
the dataset, not by the teacher.

Packing puts several samples in one row of at most `max_len` tokens (best-fit decreasing: longest first,
each into the fullest row it still fits). A packed row keeps `seq_lens`, from which the training loop makes
position ids that restart at 0 for every sample. Given position ids and no attention mask, transformers
builds a block-diagonal causal mask (sdpa, eager and flex attention) or variable-length kernels (flash
attention), so samples never attend to each other. Labels never cross a boundary either: every sample's
first token is a prompt token, labelled IGNORE, so no sample's last token is trained to predict the next
sample's first.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

IGNORE = -100


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]  # IGNORE on every token the loss must not cover

    def __len__(self) -> int:
        return len(self.input_ids)


def end_of_turn(tokenizer, messages: list[dict], prompt: str, response: str) -> str:
    """The text the chat template puts after an assistant message (e.g. "<|im_end|>\\n"): the conversation
    rendered with the response, past `prompt` (the rendering without it) and the response. Falls back to the
    EOS token when the template rewrites the assistant message (some strip or move the reasoning)."""
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": response}], tokenize=False)
    if full.startswith(prompt + response):
        return full[len(prompt) + len(response):]
    return tokenizer.eos_token or ""


def tokenize(tokenizer, messages: list[dict], response: str) -> Sample:
    """One sample: the prompt (template with the generation prompt), the response and the end-of-turn text,
    each tokenized on its own so the boundaries are exact (see scorers.perplexity.render for why)."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    parts = [tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
             for text in (prompt, response, end_of_turn(tokenizer, messages, prompt, response))]
    ids = [*parts[0], *parts[1], *parts[2]]
    labels = [IGNORE] * len(parts[0]) + [*parts[1], *parts[2]]
    if labels:
        labels[0] = IGNORE  # never a target: it would be predicted from the previous packed sample
    return Sample(ids, labels)


def pack(lengths: list[int], max_len: int) -> list[list[int]]:
    """Best-fit decreasing: indices of `lengths` grouped into bins whose lengths sum to at most max_len.
    Items longer than max_len are left out (the caller counts them). Deterministic for a given input."""
    order = sorted((i for i, n in enumerate(lengths) if 0 < n <= max_len), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted: the fullest bin that fits comes first
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            space, b = free.pop(at)
            bins[b].append(i)
            if space - n > 0:
                bisect.insort(free, (space - n, b))
        else:
            bins.append([i])
            if max_len - n > 0:
                bisect.insort(free, (max_len - n, len(bins) - 1))
    return bins


def packed_rows(samples: list[Sample], keys: list[str], max_len: int) -> tuple[list[dict], list[str]]:
    """Packed rows {input_ids, labels, seq_lens, keys, loss_tokens} and the keys of samples too long to fit."""
    lengths = [len(s) for s in samples]
    rows = []
    for members in pack(lengths, max_len):
        rows.append({
            "input_ids": [t for i in members for t in samples[i].input_ids],
            "labels": [t for i in members for t in samples[i].labels],
            "seq_lens": [lengths[i] for i in members],
            "keys": [keys[i] for i in members],
            "loss_tokens": sum(1 for i in members for t in samples[i].labels if t != IGNORE),
        })
    too_long = [keys[i] for i, n in enumerate(lengths) if n > max_len]
    return rows, too_long


def position_ids(seq_lens: list[int]) -> list[int]:
    """0, 1, ... restarting at every packed sample."""
    return [p for n in seq_lens for p in range(n)]
