"""The tiny reference model (the embedded default's perplexity model): trained in the background from the
pipeline's start, or by score itself, it is the same model; the background process yields the CPU to the jobs
and ends with the driver; a failed training stops score with a clear error."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
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
    deadline = time.monotonic() + 10  # the process lowers its priority once Python has started
    while _stat(build.pid)[16] != "19" and time.monotonic() < deadline and build.poll() is None:
        time.sleep(0.05)
    assert _stat(build.pid)[16] == "19"  # the lowest priority: the jobs it overlaps keep their CPU
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


def test_the_training_ends_with_the_process_that_started_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(e for e in sys.path if e)}
    model = tmp_path / "model"
    shell = subprocess.Popen(["sh", "-c", f"{sys.executable} -m distill.tiny_model --parent $$ {model} {TEXT} & "
                              "echo $!; sleep 60"], stdout=subprocess.PIPE, text=True, env=env)
    child = int(shell.stdout.readline())
    time.sleep(1.5)  # the child is importing torch by now
    shell.kill()
    shell.wait()
    deadline = time.monotonic() + 5  # training alone takes about 10 s
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child)
    assert not model.exists()


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command's name: [0] the state, [16] the nice value."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except FileNotFoundError:
        return False
