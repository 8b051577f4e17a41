"""The chunked training loss against the plain full-logits one, on the tiny model (CPU, float32)."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from distill.training import loss as L
from distill.training.packing import IGNORE


@pytest.fixture(scope="module")
def model(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def _batch(vocab: int):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 37), generator=gen)
    labels = ids.clone()
    labels[:, :6] = IGNORE  # a prompt
    labels[1, 29:] = IGNORE  # padding
    pos = torch.cat([torch.arange(20), torch.arange(17)]).repeat(2, 1)  # two packed samples per row
    return ids, labels, pos


def _loss_and_grads(model, batch, chunk: int):
    model.zero_grad(set_to_none=True)
    summed = L.token_loss_sum(model, *batch, contextlib.nullcontext, chunk)
    summed.backward()
    return summed.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_the_chunked_loss_has_the_plain_loss_and_gradients(model):
    batch = _batch(model.config.vocab_size)
    plain, plain_grads = _loss_and_grads(model, batch, 0)
    targets = int((batch[1][:, 1:] != IGNORE).sum())
    assert targets == 31 + 23 and plain > 0  # labels 6..36 and 6..28
    for chunk in (7, 64, 10_000):  # uneven last chunk, one chunk, a chunk bigger than the targets
        summed, grads = _loss_and_grads(model, batch, chunk)
        assert summed.item() == pytest.approx(plain.item(), rel=1e-6), chunk
        assert grads.keys() == plain_grads.keys()
        for name, grad in grads.items():
            scale = float(plain_grads[name].abs().max())  # float32 sums in another order: relative to the largest
            torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-6 * scale, msg=f"{chunk}: {name}")
    # the head works again after the chunked forward
    assert model(input_ids=batch[0]).logits.shape == (*batch[0].shape, model.config.vocab_size)


def test_only_one_chunk_of_logits_exists_at_a_time_and_backward_recomputes_it(model, monkeypatch):
    rows = []
    real = L._chunk_loss

    def spy(hidden, weight, bias, targets):
        rows.append(hidden.shape[0])
        return real(hidden, weight, bias, targets)

    monkeypatch.setattr(L, "_chunk_loss", spy)
    batch = _batch(model.config.vocab_size)
    model.zero_grad(set_to_none=True)
    L.token_loss_sum(model, *batch, contextlib.nullcontext, 16).backward()
    forward = [16] * (54 // 16) + [54 % 16]  # 54 target tokens, 16 at a time
    assert len(forward) == math.ceil(54 / 16)
    assert rows[:len(forward)] == forward  # the forward: one chunk after the other, nothing bigger
    assert sorted(rows[len(forward):]) == sorted(forward)  # the backward: each chunk's logits made again


def test_no_target_token_gives_a_zero_loss_with_zero_gradients(model):
    ids, labels, pos = _batch(model.config.vocab_size)
    summed, grads = _loss_and_grads(model, (ids, torch.full_like(labels, IGNORE), pos), 8)
    assert summed.item() == 0.0 and all(float(g.abs().sum()) == 0.0 for g in grads.values())
