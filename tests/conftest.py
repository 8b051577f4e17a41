"""Shared fixtures: one small Spark + Delta session for the whole test run, a warehouse per test, and one
run of the whole sample pipeline that every test needing its tables shares.

The session comes from the project's own factory (distill.spark.get_spark), so the tests exercise
the settings users get, scaled down: local[2], no UI, few partitions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

TEST_SPARK = [
    "spark.master=local[2]",
    "spark.app_name=distill-tests",
    "spark.conf.spark.ui.enabled=false",
    "spark.conf.spark.ui.showConsoleProgress=false",
    "spark.conf.spark.sql.shuffle.partitions=2",
    "spark.conf.spark.default.parallelism=2",
    "spark.conf.spark.databricks.delta.snapshotPartitions=1",
    "spark.conf.spark.driver.memory=2g",
    # as conf/local.yaml: tiny tables run faster interpreted than compiled
    "spark.conf.spark.sql.codegen.wholeStage=false",
    "spark.conf.spark.sql.codegen.factoryMode=NO_CODEGEN",
]


def make_config(tmp_path: Path, *overrides: str):
    from distill.config import load_config

    return load_config(
        None,
        [*TEST_SPARK, f"warehouse={tmp_path / 'warehouse'}", f"output_dir={tmp_path / 'out'}", *overrides],
    )


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from distill.spark import get_spark

    cfg = make_config(tmp_path_factory.mktemp("session"))
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture(autouse=True)
def _a_clean_checkout(monkeypatch):
    """distill.settled skips and settles only on a checkout without uncommitted changes: the jobs a test runs in
    this process see one (a fixed commit), so they behave alike in CI and in a work tree with changes."""
    import distill.settled

    monkeypatch.setattr(distill.settled, "git_sha", lambda: "0" * 40)


@pytest.fixture(autouse=True)
def _nothing_cached_between_tests():
    """After each test the session forgets what the test cached, as a new job's driver would: Spark's cached
    DataFrames (a job that failed on purpose may leave some) and Delta's snapshots of the test's tables. A
    cached plan keeps its broadcast tables (on-heap pages) alive, and 700 tests share this JVM."""
    yield
    from pyspark import SparkContext

    sc = SparkContext._active_spark_context
    if sc is not None:
        from pyspark.sql import SparkSession

        SparkSession.builder.getOrCreate().catalog.clearCache()
        sc._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()


@pytest.fixture
def cfg(tmp_path):
    return make_config(tmp_path)


class ExitCode(int):
    """run_cli's exit code. Its repr carries the job's last `distill:` line on stderr, so a failed
    `assert run_cli(...) == 0` says why in pytest's one-line summary, not only deep in the captured output."""

    def __new__(cls, code: int, why: str):
        obj = super().__new__(cls, code)
        obj.why = why
        return obj

    def __repr__(self) -> str:
        return f"{int(self)} ({self.why})" if int(self) and self.why else str(int(self))


class _Tee:
    """Writes go to every stream; anything else (isatty, fileno, encoding) is the first stream's."""

    def __init__(self, *streams):
        self.streams = streams

    def __getattr__(self, name: str):
        return getattr(self.streams[0], name)

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def run_cli(*argv: str) -> ExitCode:
    """Run `distill ...` in this process (it reuses the session fixture's Spark). stderr still reaches the test
    (capsys); a copy is kept for the exit code's repr."""
    import contextlib
    import io

    from distill.cli import main

    copy = io.StringIO()
    with contextlib.redirect_stderr(_Tee(sys.stderr, copy)):
        code = main(list(argv))
    lines = copy.getvalue().splitlines()
    said = [i for i, line in enumerate(lines) if line.startswith("distill:")]
    if not said:
        return ExitCode(code, "")
    # a JVM error's message is on the line after Py4J's "An error occurred while calling ...", its root last
    why = [lines[said[-1]], *lines[said[-1] + 1:said[-1] + 2]]
    why += [line for line in lines[said[-1]:] if line.strip().startswith("Caused by:")][-1:]
    return ExitCode(code, " ".join(line.strip() for line in why))


def cli_overrides(cfg) -> list[str]:
    """--set arguments that point a CLI run at `cfg`'s warehouse with the test Spark settings."""
    out = []
    for item in [*TEST_SPARK, f"warehouse={cfg.warehouse}", f"output_dir={cfg.output_dir}"]:
        out += ["--set", item]
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random tiny Qwen2 with a chat template, built offline (see distill.tiny_model)."""
    from distill.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


def build_tiny_reward_model(out: Path, num_labels: int = 1, seed: int = 0) -> Path:
    """A reward model built offline: the tiny Qwen2's tokenizer (with its chat template) and a random Qwen2
    sequence classifier with `num_labels` outputs (a reward model has one)."""
    import torch
    from distill.tiny_model import build_tiny_model
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(out.parent / "tiny-lm"))
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         num_labels=num_labels, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny-rm")


@pytest.fixture(scope="session")
def vllm_facts(tiny_model, tmp_path_factory) -> dict:
    """What one vLLM engine on CPU answered (tests/scripts/vllm_smoke.py): an engine start takes ~40 s, so the
    raw-vLLM check (test_stack), VllmEngine's contract (test_engines) and VllmScorer (test_perplexity) share
    one (one per test session, also when pytest-xdist runs it in several processes)."""
    run = SharedRun(tmp_path_factory, "vllm-facts")
    run.start([sys.executable, str(ROOT / "tests/scripts/vllm_smoke.py"), str(tiny_model)])
    stdout, _ = run.result(timeout=400)
    return json.loads(stdout.strip().splitlines()[-1])


class SharedRun:
    """A subprocess the test session runs once for all its processes (scripts/test.sh runs pytest-xdist), in a
    folder they share: the first process to claim the folder starts it, with its output going to files there,
    and any process's result() waits for its end. `home`: a fixed folder instead (a run kept between sessions).
    """

    def __init__(self, tmp_path_factory, name: str, home: Path | None = None):
        if home is None:
            # every xdist process has a base folder of its own under the session's one (popen-gw0, ...)
            base = tmp_path_factory.getbasetemp()
            home = base.parent / name if os.environ.get("PYTEST_XDIST_WORKER") else base / name
        self.name, self.home, self.proc = name, home, None

    def start(self, cmd: list[str]) -> None:
        """Start `cmd` unless a process of this session (or an earlier session, for a fixed home) did."""
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.home / "claimed", "x") as claim:
                claim.write(str(os.getpid()))  # who makes it: a waiter can tell a run nobody will finish
        except FileExistsError:
            return
        with open(self.home / "stdout.txt", "w") as out, open(self.home / "stderr.txt", "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, text=True)

    def result(self, timeout: float = 1800) -> tuple[str, str]:
        """(stdout, stderr) of the finished run; fails the test with its output when it failed."""
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = f"killed after {timeout} s"
            if code != 0:
                (self.home / "failed.txt").write_text(f"{self.name} exited with {code}")
            (self.home / "done").touch()
            self.proc = None
        deadline = time.monotonic() + timeout
        while not (self.home / "done").exists():  # another process runs it
            assert time.monotonic() < deadline, f"{self.name} did not end within {timeout} s"
            assert not self.abandoned(), (f"{self.home} holds a {self.name} that a killed test process started "
                                          "and nobody will finish: delete the folder")
            time.sleep(1)
        stdout, stderr = (self.home / "stdout.txt").read_text(), (self.home / "stderr.txt").read_text()
        failed = self.home / "failed.txt"
        assert not failed.exists(), f"{failed.read_text()}:\n{stdout[-3000:]}\n{stderr[-5000:]}"
        return stdout, stderr

    def abandoned(self) -> bool:
        """Claimed by a process that is gone (a session killed while it made the run) and not done."""
        try:
            pid = int((self.home / "claimed").read_text())
        except (FileNotFoundError, ValueError):  # not claimed, or claimed a moment ago and not yet written
            return False
        if (self.home / "done").exists():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            pass
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name)


def run_subprocess(cmd: list[str], timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **kw.pop("env", {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=kw.pop("cwd", ROOT), env=env, **kw)


@dataclass(frozen=True)
class SampleRun:
    """Where the shared `./submit.sh` run of the sample pipeline left things, and what it printed."""

    home: Path
    stdout: str
    stderr: str

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def out(self) -> Path:
        return self.home / "out"

    @property
    def reference(self) -> Path:
        """The tiny reference model the run's `score` trained; `train` fine-tuned it into the student."""
        return self.home / "reference"

    def sets(self, home: Path | None = None) -> list[str]:
        """`--set` arguments for a `submit.sh` run over `home` (default: this run's own) with this run's
        settings and reference model."""
        home = home or self.home
        out = []
        for item in (f"warehouse={home / 'warehouse'}", f"output_dir={home / 'out'}",
                     "spark.conf.spark.ui.enabled=false", f"score.perplexity.model={self.reference}",
                     f"train.student={self.reference}"):
            out += ["--set", item]
        return out

    def copy(self, home: Path, tables: tuple[str, ...] | None = None) -> Path:
        """A private copy to write to: the whole run (warehouse and out), or only `tables` of its warehouse."""
        if tables is None:
            shutil.copytree(self.warehouse, home / "warehouse")
            shutil.copytree(self.out, home / "out")
        else:
            for name in tables:
                shutil.copytree(self.warehouse / name, home / "warehouse" / name)
        return home


def pytest_collection_modifyitems(config, items):
    """The modules that read the shared sample run go last, each whole (its module fixtures are made once;
    pytest-xdist hands out whole modules in this order): the run starts in the background with the session and
    is ready by the time they come, instead of a worker waiting for it while the other modules could run."""
    late = {item.path for item in items if "sample_run" in getattr(item, "fixturenames", ())}
    items[:] = [i for i in items if i.path not in late] + [i for i in items if i.path in late]


@pytest.fixture(scope="session", autouse=True)
def _sample_run_started(request, tmp_path_factory):
    """The shared sample run starts with the session when any collected test reads it: it takes minutes, and
    the tests before its first reader run meanwhile."""
    if not any("sample_run" in item.fixturenames for item in request.session.items):
        yield None
        return
    # A developer's quick loop: DISTILL_TEST_SAMPLE_RUN=DIR keeps the run in DIR between sessions (made once;
    # tests must not write to it, as always). Its paths are in its tables, so it stays where it was made.
    kept = os.environ.get("DISTILL_TEST_SAMPLE_RUN")
    run = SharedRun(tmp_path_factory, "sample-run", Path(kept) if kept else None)
    run.start([str(ROOT / "submit.sh"), *SampleRun(run.home, "", "").sets()])
    yield run
    if run.proc is not None:  # started here and read by none of this process's tests: wait for its end
        run.result()


@pytest.fixture(scope="session")
def sample_run(_sample_run_started) -> SampleRun:
    """The README's run command, once per test session: `./submit.sh` with the embedded default (the whole
    pipeline on the bundled sample), into a warehouse of its own. Tests only read it; a test that writes
    (a re-run, a killed job) works on `sample_run.copy(...)`. Its `score` trains the tiny reference model, which
    its `train` fine-tunes, as on a fresh clone."""
    return SampleRun(_sample_run_started.home, *_sample_run_started.result())
