#!/usr/bin/env bash
# The device check (bench/device/check.py): one short run on a GPU node, one JSON line per figure.
#   bash bench/device/check.sh          # on a GPU: ~1.5B-parameter model, a 32k-token training row
#   bash bench/device/check.sh --tiny   # on CPU in seconds (the test suite runs this)
# It needs only python3 with torch and transformers: this checkout's .venv when there is one, else
# $PYTHON or python3 (a GPU node's own stack); lib/ goes on the path, nothing is installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py=python3; fi
fi
export TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
PYTHONPATH="$root/lib${PYTHONPATH:+:$PYTHONPATH}" exec "$py" "$root/bench/device/check.py" "$@"
