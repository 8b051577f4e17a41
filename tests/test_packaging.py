"""The installable package: a wheel built from this checkout carries every module of lib/distill and jobs/, and
each imports from the installed wheel alone (not from the checkout), as on a node that installs the wheel or an
image that bakes it in."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

RUNS_ON_IMPORT = {"jobs.main"}  # spark-submit's entry point: importing it runs a job


def modules_in_checkout() -> set[str]:
    found = set()
    for top, base in (("distill", ROOT / "lib" / "distill"), ("jobs", ROOT / "jobs")):
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            found.add(".".join((top, *parts[:-1])) if parts[-1] == "__init__" else ".".join((top, *parts)))
    return found


def test_the_wheel_carries_and_imports_every_module(tmp_path):
    # built from a copy of what a wheel is made of: setuptools' build/ folder in the checkout may hold
    # modules of an earlier build that the current package list would no longer find
    src = tmp_path / "src"
    for name in ("lib", "jobs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("distill-*.whl")
    with zipfile.ZipFile(wheel) as z:
        in_wheel = {n[:-3].replace("/", ".").removesuffix(".__init__") for n in z.namelist() if n.endswith(".py")}
    expected = modules_in_checkout()
    assert {"distill.training.loop", "distill.verifiers.registry", "jobs.pipeline"} <= expected
    assert in_wheel == expected, (sorted(expected - in_wheel), sorted(in_wheel - expected))

    # every module imports from the wheel: unpacked alone on the path, the checkout out of reach
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    checkout = [str(ROOT), str(ROOT / "lib")]
    code = ("import importlib, sys\n"
            # the checkout off the path, and off the meta path (this environment's editable install of it)
            f"sys.path[:] = [{str(site)!r}] + [p for p in sys.path if p and p not in {checkout!r}]\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            "for name in sys.argv[1:]:\n"
            "    module = importlib.import_module(name)\n"
            f"    assert module.__file__.startswith({str(site)!r}), (name, module.__file__)\n"
            "print('imported', len(sys.argv) - 1)\n")
    names = sorted(expected - RUNS_ON_IMPORT)
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"imported {len(names)}"


def test_a_cuda_bootstrap_without_nvcc_stops_before_it_installs_anything(tmp_path):
    """Horovod's NCCL build needs nvcc; bootstrap says so before the venv is touched, not in CMake after the
    whole install (a copy of scripts/ and requirements/ in an empty folder: the real .venv is not at stake)."""
    if shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc"):
        pytest.skip("this machine has nvcc")
    for folder in ("scripts", "requirements"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HOROVOD_GPU_OPERATIONS"}
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "bootstrap.sh")], capture_output=True, text=True,
                          env={**env, "DISTILL_ACCEL": "cuda"}, timeout=60)
    assert done.returncode == 3, (done.returncode, done.stderr[-2000:])
    assert "missing 'nvcc'" in done.stderr and "HOROVOD_GPU_OPERATIONS= scripts/bootstrap.sh" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml", "requirements", "scripts"]  # no .venv
