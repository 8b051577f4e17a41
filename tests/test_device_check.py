"""bench/device/check.sh, the device check, in its tiny CPU mode: it runs, prints one JSON line per figure,
and its own cross-checks hold (the batched scorer gives the plain loop's perplexities, the chunked loss the
plain loss), so the script a GPU node runs cannot rot unseen."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_subprocess


@pytest.mark.slow
def test_the_device_check_runs_in_its_tiny_cpu_mode():
    done = run_subprocess(["bash", str(ROOT / "bench/device/check.sh"), "--tiny"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    figures = {(f["figure"], f.get("loss")): f for f in lines}
    assert [f["figure"] for f in lines] == ["environment", "model", "perplexity", "train_step", "train_step",
                                            "embedder"]
    ppl = figures["perplexity", None]
    assert ppl["tokens"] > 0 and ppl["scorer_tokens_per_s"] > 0 and ppl["plain_loop_tokens_per_s"] > 0
    assert ppl["max_relative_ppl_difference"] < 1e-4  # the scorer and the plain loop compute the same thing
    plain, chunked = figures["train_step", "plain"], figures["train_step", "chunked"]
    assert plain["chunk_tokens"] == 0 and chunked["chunk_tokens"] > 0 and plain["tokens"] == chunked["tokens"]
    assert chunked["loss_value"] == pytest.approx(plain["loss_value"], rel=1e-5)
    assert plain["peak_gpu_mib"] is None and plain["tokens_per_s"] > 0  # CPU: no GPU memory to report
    emb = figures["embedder", None]
    assert emb["texts"] == 16 and emb["dim"] == 64 and emb["texts_per_s"] > 0


def test_without_a_gpu_the_full_mode_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the full mode would run")
    done = run_subprocess(["bash", str(ROOT / "bench/device/check.sh")], timeout=300)
    assert done.returncode == 2 and "no CUDA device; run with --tiny" in done.stderr
