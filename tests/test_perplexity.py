"""Response perplexity (distill.scorers.perplexity) on the tiny model: against a plain torch computation, over
the response tokens only, the same batched as one by one, and (slow) the same through vLLM."""

from __future__ import annotations

import math

import pytest
from distill.scorers.perplexity import TransformersScorer, perplexity_from_logprobs, render

from tests.engine_contract import (
    ASK,
    ITEMS,
    VLLM_BUDGET,
    VLLM_LONG_ITEMS,
    VLLM_PERPLEXITY_ITEMS,
    VLLM_PERPLEXITY_WINDOW,
)


def close(a: float, b: float, rel: float = 1e-5) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=0.0)


@pytest.fixture(scope="module")
def scorer(tiny_model):
    return TransformersScorer(tiny_model, batch_size=8)


def by_hand(scorer, messages, response, max_tokens=None):
    """log p(token t | tokens < t) for the response tokens, with nothing but the model's forward and torch."""
    import torch

    tok = scorer.tokenizer
    prompt_ids = tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                     add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + tok(response, add_special_tokens=False)["input_ids"])[:max_tokens]
    with torch.no_grad():
        logits = scorer.model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return [float(logprobs[t - 1, ids[t]]) for t in range(len(prompt_ids), len(ids))]


def test_matches_a_hand_computation_over_response_tokens_only(scorer):
    messages, response = ITEMS[0]
    expected = by_hand(scorer, messages, response)
    [got] = scorer.score([(messages, response)])
    assert got.error is None and not got.truncated
    assert got.n_response_tokens == len(expected) == len(scorer.tokenizer(response, add_special_tokens=False)
                                                         ["input_ids"])
    assert abs(got.mean_logprob - sum(expected) / len(expected)) < 1e-5
    assert close(got.ppl, math.exp(-sum(expected) / len(expected)))
    # the prompt is context, not scored: another prompt changes the score but not the count
    [other] = scorer.score([([{"role": "user", "content": "Name a colour."}], response)])
    assert other.n_response_tokens == got.n_response_tokens
    assert not close(other.ppl, got.ppl, rel=1e-3)


def test_batched_equals_one_by_one(scorer, tiny_model):
    batched = scorer.score(ITEMS)
    single = TransformersScorer(tiny_model, batch_size=1)
    for item, b in zip(ITEMS, batched, strict=True):
        [s] = single.score([item])
        assert b.n_response_tokens == s.n_response_tokens > 0
        assert abs(b.mean_logprob - s.mean_logprob) < 1e-5 and close(b.ppl, s.ppl)
    # and in the caller's order, whatever order the batches ran in
    assert [r.n_response_tokens for r in batched] == [
        len(scorer.tokenizer(r, add_special_tokens=False)["input_ids"]) for _, r in ITEMS]


def test_empty_response_is_an_error_and_spares_its_batch(scorer):
    results = scorer.score([ITEMS[0], (ASK, ""), ITEMS[3]])
    assert results[1].error == "empty_response" and math.isnan(results[1].ppl)
    assert results[1].n_response_tokens == 0
    assert results[0].error is None and results[2].error is None
    assert close(results[0].ppl, scorer.score([ITEMS[0]])[0].ppl)


def test_too_long_scores_the_first_max_tokens_and_says_so(scorer, tiny_model):
    messages, response = ITEMS[0]
    ids, start = render(scorer.tokenizer, messages, response)
    cut = TransformersScorer(tiny_model, max_tokens=start + 5)
    [got] = cut.score([(messages, response)])
    assert got.truncated and got.n_response_tokens == 5
    expected = by_hand(scorer, messages, response, max_tokens=start + 5)
    assert close(got.ppl, perplexity_from_logprobs(expected))
    # a prompt that fills the window leaves nothing to score
    [none] = TransformersScorer(tiny_model, max_tokens=start).score([(messages, response)])
    assert none.error == "prompt_too_long" and none.truncated and math.isnan(none.ppl)
    # the default window is the model's
    assert scorer.max_tokens == scorer.model.config.max_position_embeddings
    assert not scorer.score([(messages, response)])[0].truncated


def test_perplexity_from_logprobs():
    assert perplexity_from_logprobs([math.log(0.5)] * 3) == pytest.approx(2.0)
    assert perplexity_from_logprobs([0.0, 0.0]) == 1.0
    assert perplexity_from_logprobs([-1.0, -3.0]) == pytest.approx(math.e**2)
    assert math.isnan(perplexity_from_logprobs([]))


@pytest.mark.parametrize("response", ["The answer is 42.", " leading space", "\n\nblank lines first", "4"])
def test_render_boundary_is_exact(scorer, response):
    tok = scorer.tokenizer
    prompt = tok.apply_chat_template(ITEMS[1][0], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids, start = render(tok, ITEMS[1][0], response)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tok(response, add_special_tokens=False)["input_ids"]
    assert ids == prompt_ids + response_ids and start == len(prompt_ids)
    assert tok.decode(ids[:start]) == prompt and tok.decode(ids[start:]) == response


@pytest.mark.slow
def test_vllm_agrees_with_transformers(tiny_model, vllm_facts):
    # VllmScorer on the engine the session's vLLM check started (tests/scripts/vllm_smoke.py)
    items, window = VLLM_PERPLEXITY_ITEMS, VLLM_PERPLEXITY_WINDOW
    via_vllm = vllm_facts["perplexity"]
    via_hf = TransformersScorer(tiny_model, max_tokens=window).score(items)
    assert [r.truncated for r in via_hf] == [False, False, True, False, False]
    for hf, vl in zip(via_hf, via_vllm, strict=True):
        assert (vl["error"], vl["n_response_tokens"], vl["truncated"]) == (hf.error, hf.n_response_tokens,
                                                                           hf.truncated)
        if hf.error is None:
            assert close(vl["ppl"], hf.ppl, rel=1e-3)
            assert abs(vl["mean_logprob"] - hf.mean_logprob) < 1e-3


@pytest.mark.slow
def test_vllm_scores_long_responses_in_steps_of_its_token_budget(tiny_model, vllm_facts):
    # the scorer's own engine (tests/scripts/vllm_smoke.py): score.perplexity.token_budget 64, batch_size 2
    long = vllm_facts["long"]
    assert (long["max_num_batched_tokens"], long["max_num_seqs"], long["chunked_prefill"]) == (VLLM_BUDGET, 2, True)
    scorer = TransformersScorer(tiny_model)
    lengths = [len(render(scorer.tokenizer, m, r)[0]) for m, r in VLLM_LONG_ITEMS]
    assert min(lengths) > 5 * VLLM_BUDGET, lengths  # each sequence's log-probs took several engine steps
    via_hf = scorer.score(VLLM_LONG_ITEMS)
    for hf, vl in zip(via_hf, long["perplexity"], strict=True):
        assert hf.error is None and vl["error"] is None and not vl["truncated"]
        assert vl["n_response_tokens"] == hf.n_response_tokens
        assert close(vl["ppl"], hf.ppl, rel=1e-3) and abs(vl["mean_logprob"] - hf.mean_logprob) < 1e-3
