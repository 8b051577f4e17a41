#!/usr/bin/env bash
# Build horovod 0.28.1 (the last release) as a wheel that works with torch 2.13, once per machine.
#
# Why a build of our own: horovod 0.28.1's CMake files ask for C++14, torch >= 2.1 needs C++17. The
# fix is on horovod's master but was never released, so we patch the sdist's two CMakeLists.txt.
# The wheel is cached outside the clone (keyed by horovod, torch and Python versions), so a fresh
# clone installs it in seconds instead of compiling for ~10 minutes.
#
# Usage: scripts/build_horovod.sh PYTHON   (prints the wheel's path on its last line)
# GPU builds: export HOROVOD_GPU_OPERATIONS=NCCL (and have CUDA + NCCL) before running.
set -euo pipefail
PY=${1:?usage: build_horovod.sh PYTHON}
HVD_VERSION=0.28.1
CACHE=${DISTILL_CACHE:-$HOME/.cache/distill}
key=$("$PY" -c 'import sys, torch; print(f"cp{sys.version_info.major}{sys.version_info.minor}-torch{torch.__version__}")')
gpu_tag=${HOROVOD_GPU_OPERATIONS:+-gpu}
wheel_dir="$CACHE/wheels/horovod-$HVD_VERSION-$key$gpu_tag"
existing=$(ls "$wheel_dir"/horovod-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building horovod $HVD_VERSION for $key (about 10 minutes on 2 cores; once per machine)" >&2
"$PY" -m pip download --no-deps --no-binary :all: -d "$work" "horovod==$HVD_VERSION" >&2
tar -xzf "$work/horovod-$HVD_VERSION.tar.gz" -C "$work"
src="$work/horovod-$HVD_VERSION"
sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt"

# The bundled gloo declares an old cmake_minimum_required that CMake 4 refuses.
export CMAKE_POLICY_VERSION_MINIMUM=3.5
export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1
export HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
export MAKEFLAGS="-j$(nproc)"
mkdir -p "$work/out"
# --no-build-isolation: the extension must compile against the torch that is installed.
"$PY" -m pip wheel --no-deps --no-build-isolation -w "$work/out" "$src" >&2
mkdir -p "$wheel_dir"
cp "$work"/out/horovod-*.whl "$wheel_dir/"
ls "$wheel_dir"/horovod-*.whl | head -n1
