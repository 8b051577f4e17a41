"""Tokenization with the student's chat template, loss masks, and packing (distill.training.packing)."""

from __future__ import annotations

import random

import pytest
from distill.training.packing import IGNORE, Sample, pack, packed_rows, position_ids, tokenize


@pytest.fixture(scope="module")
def tok(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_labels_cover_the_response_and_end_of_turn_only(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 2 and 3."},
                {"role": "assistant", "content": "Earlier turn, written by the dataset."},
                {"role": "user", "content": "And 4 and 5?"}]
    response = "<think>4 + 5 = 9</think><answer>9</answer>"
    s = tokenize(tok, messages, response)
    assert len(s.input_ids) == len(s.labels)
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert s.labels[:n_prompt] == [IGNORE] * n_prompt  # system, user and the earlier assistant turn
    trained = [t for t in s.labels if t != IGNORE]
    assert trained == s.input_ids[n_prompt:]
    assert tok.decode(trained) == response + "<|im_end|>\n"  # the student learns to stop
    assert tok.decode(s.input_ids) == tok.apply_chat_template(
        [*messages, {"role": "assistant", "content": response}], tokenize=False)


def test_pack_fits_every_bin_and_leaves_out_only_the_too_long():
    rng = random.Random(0)
    lengths = [rng.randint(1, 120) for _ in range(500)] + [101, 250]
    bins = pack(lengths, 100)
    placed = sorted(i for b in bins for i in b)
    assert placed == [i for i, n in enumerate(lengths) if n <= 100]  # each once; 101 and 250 left out
    assert all(sum(lengths[i] for i in b) <= 100 for b in bins)
    lower_bound = -(-sum(lengths[i] for i in placed) // 100)
    assert len(bins) <= 1.05 * lower_bound  # best-fit decreasing: within a few % of the volume bound
    assert pack([60, 50, 40, 30, 20], 100) == [[0, 2], [1, 3, 4]]  # exact, deterministic


def test_packed_rows_lose_no_token_and_keep_boundaries(tok):
    rng = random.Random(1)
    samples, keys = [], []
    for i in range(40):
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "9", "+"]) for _ in range(rng.randint(1, 60)))
        samples.append(tokenize(tok, [{"role": "user", "content": f"question {i}"}], words))
        keys.append(f"q{i}")
    samples.append(Sample(list(range(300)), [IGNORE] + list(range(1, 300))))
    keys.append("huge")
    rows, too_long = packed_rows(samples, keys, 256)
    assert too_long == ["huge"]
    seen = {}
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == sum(row["seq_lens"]) <= 256
        assert len(row["keys"]) == len(row["seq_lens"])
        assert row["loss_tokens"] == sum(t != IGNORE for t in row["labels"])
        pos = position_ids(row["seq_lens"])
        starts = [i for i, p in enumerate(pos) if p == 0]
        assert len(starts) == len(row["seq_lens"])
        for key, start, n in zip(row["keys"], starts, row["seq_lens"], strict=True):
            seen[key] = (row["input_ids"][start:start + n], row["labels"][start:start + n])
            assert row["labels"][start] == IGNORE  # no target across a boundary
    assert seen == {k: (s.input_ids, s.labels) for k, s in zip(keys, samples, strict=True) if k != "huge"}


def test_packed_samples_do_not_see_each_other(tiny_model, tok):
    """The model's log-probs for a sample are the same alone and packed behind another sample: position ids
    that restart per sample give it a block-diagonal mask."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    a = tokenize(tok, [{"role": "user", "content": "first question"}], "first answer, rather long " * 3)
    b = tokenize(tok, [{"role": "user", "content": "second"}], "second answer")
    with torch.no_grad():
        alone = model(torch.tensor([b.input_ids]), use_cache=False).logits[0]
        ids = torch.tensor([a.input_ids + b.input_ids])
        pos = torch.tensor([position_ids([len(a), len(b)])])
        packed = model(ids, position_ids=pos, use_cache=False).logits[0, len(a):]
        leaky = model(ids, use_cache=False).logits[0, len(a):]  # one sequence: b attends to a
    assert torch.allclose(packed, alone, atol=1e-5)
    assert not torch.allclose(leaky, alone, atol=1e-3)  # the test can tell the difference
