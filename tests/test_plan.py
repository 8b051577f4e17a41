"""bench/plan.py, the scale model: each stage's hours follow from the data's shape and the throughputs by
the formulas in its docstring, and `--warehouse` takes the shape from a real ledger."""

from __future__ import annotations

import pytest

from bench.plan import Assumptions, main, measured_shape, plan


def test_each_stage_is_its_work_over_its_throughput():
    a = Assumptions(attempts_per_pair=2.0, accepted_share=0.5, kept_share=0.5, output_tokens=100, prompt_tokens=10,
                    embed_texts_per_s=10, gen_tokens_per_s=100, score_tokens_per_s=1000, verify_core_seconds=2,
                    cpu_cores=4, epochs=3, eval_items=5, eval_samples=2, eval_output_tokens=50,
                    student_gen_tokens_per_s=10)
    rows = {r["stage"]: r for r in plan(n=360, teachers=2, gpus=4, a=a)}
    assert list(rows) == ["prepare", "generate", "verify", "score", "train", "evaluate"]
    hours = {k: r["gpu_hours"] for k, r in rows.items()}
    # 720 pairs, 1440 attempts, 360 accepted, 180 kept
    assert hours["prepare"] == pytest.approx(360 / 10 / 3600)
    assert hours["generate"] == pytest.approx(1440 * 100 / 100 / 3600)
    assert hours["verify"] == pytest.approx(1440 * 2 / 3600) and rows["verify"]["device"] == "CPU core"
    assert rows["verify"]["wall_hours"] == pytest.approx(hours["verify"] / 4)
    assert hours["score"] == pytest.approx(360 * 110 / 1000 / 3600)
    assert hours["train"] == pytest.approx(180 * 110 * 3 / a.train_tokens_per_s / 3600)
    assert hours["evaluate"] == pytest.approx(2 * 5 * 2 * 50 / 10 / 3600)
    assert rows["generate"]["wall_hours"] == pytest.approx(hours["generate"] / 4)
    assert a.train_tokens_per_s == pytest.approx(a.mfu * 989e12 / (6 * a.student_params))


def test_a_bad_assumption_names_the_key():
    with pytest.raises(SystemExit, match="--set gpu_tokens: unknown assumption"):
        main(["--set", "gpu_tokens=1"])
    with pytest.raises(SystemExit, match="--set epochs: 'two' is not a number"):
        main(["--set", "epochs=two"])


@pytest.mark.slow
def test_the_data_shape_comes_from_a_real_ledger(spark, sample_run):
    shape = measured_shape(str(sample_run.warehouse))
    attempts = spark.read.format("delta").load(str(sample_run.warehouse / "attempts")).collect()
    pairs = {(r.query_id, r.teacher) for r in attempts}
    accepted = {(r.query_id, r.teacher) for r in attempts if r.accepted}
    sft = spark.read.format("delta").load(str(sample_run.warehouse / "sft")).collect()
    assert shape["attempts_per_pair"] == pytest.approx(len(attempts) / len(pairs))
    assert shape["accepted_share"] == pytest.approx(len(accepted) / len(pairs))
    assert shape["kept_share"] == pytest.approx(sum(bool(r.keep) for r in sft) / len(sft))
    assert 1 < shape["attempts_per_pair"] < 2
    # the sample's teachers are replayed: no token counts in the ledger, so the student tokenizer's stand in
    assert all(r.tokens_out is None for r in attempts) and "prompt_tokens" not in shape
    assert shape["output_tokens"] == pytest.approx(sum(r.n_tokens for r in sft) / len(sft))


def test_the_readme_holds_the_default_table(capsys):
    from tests.conftest import ROOT

    main([])
    table = capsys.readouterr().out.split("\n\n")[1]
    assert table in (ROOT / "README.md").read_text()
