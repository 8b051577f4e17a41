"""The training loop under both launchers (Horovod gloo, TorchDistributor FSDP) on CPU, and resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from distill.training.packing import packed_rows, tokenize

from tests.conftest import run_cli
from tests.test_score import warehouse  # noqa: F401 - the fixture

QA = [("What is 2 + 3?", "<think>2 + 3 = 5</think><answer>5</answer>"),
      ("Name a prime above 10.", "<think>11 has no divisors but 1 and 11.</think><answer>11</answer>"),
      ("Reverse the word abc.", "<think>Read it backwards: c, b, a.</think><answer>cba</answer>"),
      ("Is 9 even?", "<think>9 = 2 x 4 + 1, odd.</think><answer>No</answer>"),
      ("What is 6 x 7?", "<think>6 x 7 = 42</think><answer>42</answer>"),
      ("Capital of France?", "<think>The capital of France is Paris.</think><answer>Paris</answer>")]


@pytest.fixture(scope="module")
def packed(tiny_model, tmp_path_factory) -> Path:
    """A small packed training set the tiny model can overfit: 24 samples, rows of at most 128 tokens."""
    import pyarrow as pa
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    samples = [tokenize(tok, [{"role": "user", "content": q}], a) for q, a in QA * 4]
    rows, too_long = packed_rows(samples, [str(i) for i in range(len(samples))], 128)
    assert not too_long
    path = tmp_path_factory.mktemp("packed") / "train.arrow"
    table = pa.Table.from_pylist([{k: r[k] for k in ("input_ids", "labels", "seq_lens", "loss_tokens")}
                                  for r in rows])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def spec_for(tiny_model, packed, out, **over) -> dict:
    from dataclasses import asdict

    from distill.config import TrainConfig

    base = asdict(TrainConfig(global_batch=4, epochs=100, max_steps=24, lr=3e-3, warmup_ratio=0.1, checkpoint_every=5,
                              threads=1))
    return {**base, "student": str(tiny_model), "data": str(packed), "out_dir": str(out), **over}


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def falls(steps: list[dict]) -> bool:
    first = sum(s["loss"] for s in steps[:3]) / 3
    last = sum(s["loss"] for s in steps[-3:]) / 3
    return last < 0.5 * first


@pytest.mark.parametrize("launcher", ["horovod", "torch_distributor"])
def test_two_cpu_workers_overfit_a_small_set(spark, tiny_model, packed, tmp_path, launcher):
    import torch
    from distill.training.launch import launch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    out.mkdir()
    (result,) = launch(spark, [spec_for(tiny_model, packed, out, launcher=launcher)])
    assert result["start_step"] == 0 and result["steps"] == 24
    steps = metrics(out)
    assert [s["step"] for s in steps] == list(range(1, 25))
    assert {(s["world"], s["launcher"]) for s in steps} == {(2, launcher)}
    assert falls(steps), [round(s["loss"], 3) for s in steps]
    assert steps[0]["lr"] < steps[2]["lr"] and steps[-1]["lr"] < steps[5]["lr"]  # warmup, then decay
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000020", "step-0000024"]
    # a plain Hugging Face folder holding the trained weights (not the base model's), loaded as written
    saved, base = weights(out / "model"), weights(Path(tiny_model))
    loaded = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert saved.keys() <= base.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not all(torch.equal(saved[k], base[k]) for k in saved)


def weights(folder) -> dict:
    """Every tensor of a Hugging Face model folder (one safetensors file, or shards with their index)."""
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


# A lost worker is reported once, by the launch: no thread dies beside it (distill.training.launch)
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("launcher", ["horovod", "torch_distributor"])
def test_a_killed_run_resumes_from_its_last_checkpoint(spark, tiny_model, packed, tmp_path, launcher):
    """Both workers die (exit 137) after step 12; the re-run starts at the step-10 checkpoint and ends with
    the same weights as a run that was never interrupted (made second in a launch of two runs)."""
    import torch
    from distill.training.launch import launch

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    killed.mkdir()
    clean.mkdir()
    # FSDP with gradient checkpointing: that path runs too, and must resume just as exactly
    spec = spec_for(tiny_model, packed, killed, max_steps=16, launcher=launcher,
                    gradient_checkpointing=launcher == "torch_distributor")
    os.environ["DISTILL_CRASH_AT"] = "train.step:12"
    try:
        with pytest.raises(Exception):  # noqa: B017 - horovod reports the lost workers in its own way
            launch(spark, [spec])
    finally:
        del os.environ["DISTILL_CRASH_AT"]
    assert [s["step"] for s in metrics(killed)] == list(range(1, 13))
    assert not (killed / "model").exists()
    step10 = killed / "checkpoints" / "step-0000010"
    assert (step10 / "meta.pt").is_file()
    if launcher == "torch_distributor":  # one shard per rank, written by that rank; no gathered state anywhere
        assert sorted(p.name for p in (step10 / "shards").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
        assert not (step10 / "state.pt").exists()
    (result,) = launch(spark, [spec])
    assert result["start_step"] == 10
    assert [s["step"] for s in metrics(killed)] == list(range(1, 17))  # steps 11-12 trained again, once each
    # the clean run second in a launch after another run: one launch's runs do not touch each other
    first = tmp_path / "first"
    first.mkdir()
    launch(spark, [{**spec, "out_dir": str(first), "max_steps": 2, "seed": 7}, {**spec, "out_dir": str(clean)}])
    assert [s["step"] for s in metrics(first)] == [1, 2]
    a, b = weights(killed / "model"), weights(clean / "model")
    assert [round(s["loss"], 5) for s in metrics(killed)] == [round(s["loss"], 5) for s in metrics(clean)]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_train_job_packs_the_curated_rows_trains_and_does_nothing_twice(spark, cfg, warehouse,  # noqa: F811
                                                                              capsys):
    import pyarrow.parquet as pq

    assert run_cli("train", *warehouse["args"], "--set", "train.student=/no/such/model") == 2
    assert "config error: train.student: no model at '/no/such/model'" in capsys.readouterr().err

    args = [*warehouse["args"], "--set", f"train.student={warehouse['model']}",
            "--set", "train.teachers=[teacher-a, teacher-c]", "--set", "train.max_len=256",
            "--set", "train.global_batch=4", "--set", "train.max_steps=6", "--set", "train.checkpoint_every=3",
            "--set", "train.threads=1"]
    for job in ("score", "curate", "train"):
        assert run_cli(job, *args) == 0
    kept = {f"{r.query_id}/{r.teacher}" for r in spark.read.format("delta").load(f"{cfg.warehouse}/sft").where(
        "keep AND teacher IN ('teacher-a', 'teacher-c')").collect()}
    (data,) = (Path(cfg.output_dir) / "train" / "sft").glob("data-*")
    manifest = json.loads((data / "manifest.json").read_text())
    packed = pq.read_table(data / "parquet").to_pylist()
    trained = [k for r in packed for k in r["keys"]]
    too_long = [k for r in packed for k in r["too_long"]]
    assert sorted(trained + too_long) == sorted(kept) and len(set(trained)) == len(trained)
    assert (manifest["samples"], manifest["too_long"]) == (len(trained), len(too_long))
    assert manifest["teachers"] == ["teacher-a", "teacher-c"] and manifest["max_len"] == 256

    steps = spark.read.format("delta").load(f"{cfg.warehouse}/train_metrics").collect()
    assert sorted(s.step for s in steps) == list(range(1, 7)) and len({s.train_key for s in steps}) == 1
    assert run_cli("train", *args) == 0  # the same inputs: the set and the model are there already
    runs = spark.read.format("delta").load(f"{cfg.warehouse}/runs").where(
        "job = 'train' AND status = 'succeeded'").orderBy(
        "started_at").collect()
    assert [(r.counts["train.steps"], r.counts["train.steps_run"]) for r in runs] == [(6, 6), (6, 0)]
    assert spark.read.format("delta").load(f"{cfg.warehouse}/train_metrics").count() == 6


def test_the_plan_splits_each_global_batch_across_workers_and_covers_every_row():
    from distill.training.loop import Plan

    plan = Plan(rows=10, world=2, global_batch=4, micro_batch=1, epochs=2, max_steps=None, seed=3)
    assert (plan.accum, plan.steps_per_epoch, plan.total_steps) == (2, 3, 6)
    for step in range(plan.total_steps):
        mine = [sum(plan.micro_batches(step, r), []) for r in range(2)]
        assert sorted(mine[0] + mine[1]) == sorted(plan.step_rows(step)) and len(mine[0]) == len(mine[1]) == 2
    for epoch in range(2):
        seen = sum((plan.step_rows(s) for s in range(3 * epoch, 3 * epoch + 3)), [])
        assert set(seen) == set(range(10)) and len(seen) == 12  # two rows wrap around to fill the last batch
    assert plan.step_rows(0) != plan.step_rows(3)  # a new order each epoch
    assert Plan(10, 1, 4, 1, 2, 4, 3).step_rows(2) == plan.step_rows(2)  # the order does not depend on world


def test_learning_rate_warms_up_then_decays_on_a_cosine():
    from distill.training.loop import lr_factor

    f = [lr_factor(s, 20, 0.1, 0.1) for s in range(20)]
    assert f[:2] == [0.5, 1.0] and f[2] == 1.0
    assert all(a > b for a, b in zip(f[2:], f[3:], strict=False)) and f[-1] > 0.1
    assert lr_factor(10 + 1, 20, 0.1, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 18)))


def test_collate_pads_with_a_sample_of_its_own():
    from distill.training.loop import collate
    from distill.training.packing import IGNORE

    ids, labels, pos = collate([([5, 6, 7], [IGNORE, 6, 7], [2, 1]), ([8, 9, 10, 11, 12], [IGNORE] * 5, [5])], 0)
    assert ids.tolist() == [[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]]
    assert labels.tolist() == [[IGNORE, 6, 7, IGNORE, IGNORE], [IGNORE] * 5]
    assert pos.tolist() == [[0, 1, 0, 0, 1], [0, 1, 2, 3, 4]]


def test_fsdp_loads_a_student_shard_by_shard_without_any_rank_holding_all_of_it(tmp_path):
    """Two gloo ranks load an untied model (~470 MB in float32, stored in bf16) with FsdpBackend.load_model
    (meta device, then each rank reads its slices): each adds about half the model to its memory (measured
    0.51x here; reading it whole and then sharding, the tied models' way, measured 1.07x), and the sharded
    model's logits are the plain model's."""
    import socket
    import subprocess
    import sys

    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=512, hidden_size=1024, intermediate_size=4096, num_hidden_layers=8,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=64,
                         tie_word_embeddings=False)
    path = tmp_path / "model"
    # stored in bf16, as released models are, and trained in float32: reading it whole would mean a float32
    # copy of the whole model on every rank
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(path)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    size = sum(p.numel() * p.element_size() for p in reference.parameters())
    assert size > 450 * 2**20
    with torch.no_grad():
        expected = reference(input_ids=torch.arange(24).reshape(2, 12)).logits
    del reference

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    script = Path(__file__).parent / "scripts" / "fsdp_load.py"
    ranks = [subprocess.Popen([sys.executable, str(script), str(path), str(tmp_path)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    for r in ranks:
        out, _ = r.communicate(timeout=600)
        assert r.returncode == 0, out[-3000:]
    for r in range(2):
        m = json.loads((tmp_path / f"rank-{r}.json").read_text())
        assert m["local"] == pytest.approx(size / 2, rel=0.01)  # its half of the parameters
        # what loading added to the rank's own memory (anonymous: the mapped model file is the page cache's):
        # its half and a tensor being read, never the whole model
        assert m["peak"] - m["before"] < 0.75 * size, (r, m, size)
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected, rtol=1e-4, atol=1e-4)
