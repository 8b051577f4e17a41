"""The tiny reference model (the embedded default's perplexity model): trained in the background from the
pipeline's start, or by score itself, it is the same model; the background process yields the CPU to the jobs;
a failed training stops score with a clear error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from distill import scoring

from tests.conftest import make_config

TEXT = Path(__file__).resolve().parents[1] / "data" / "sample" / "responses" / "teacher-a.jsonl"


def config(tmp_path: Path, model: Path, text: Path = TEXT):
    return make_config(tmp_path, f"score.perplexity.model={model}", f"score.perplexity.build_tiny_from=[{text}]")


def weights(model: str) -> str:
    return hashlib.sha256((Path(model) / "model.safetensors").read_bytes()).hexdigest()


def test_a_model_trained_in_the_background_is_the_one_score_trains(tmp_path):
    background = config(tmp_path, tmp_path / "background")
    scoring.start_reference_model(background)
    build = scoring._BUILDS[str(tmp_path / "background")]
    nice = int(Path(f"/proc/{build.pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
    assert nice == 19  # the lowest priority: the jobs it overlaps keep their CPU
    scoring.start_reference_model(background)  # a second start while it runs starts nothing
    assert scoring._BUILDS[str(tmp_path / "background")] is build

    assert scoring.reference_model(background) == str((tmp_path / "background").resolve())
    assert build.returncode == 0 and str(tmp_path / "background") not in scoring._BUILDS
    foreground = scoring.reference_model(config(tmp_path, tmp_path / "foreground"))
    assert weights(foreground) == weights(str(tmp_path / "background"))
    scoring.start_reference_model(background)  # the model is there: nothing to start
    assert str(tmp_path / "background") not in scoring._BUILDS


def test_a_failed_background_training_stops_score_with_a_clear_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    cfg = config(tmp_path, tmp_path / "model", empty)
    scoring.start_reference_model(cfg)
    with pytest.raises(SystemExit, match=r"training the tiny reference model at .*model failed \(exit code 1"):
        scoring.reference_model(cfg)
    assert not (tmp_path / "model").exists()
