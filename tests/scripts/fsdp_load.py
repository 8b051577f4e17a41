"""One rank of tests/test_train.py's FSDP loading check: FsdpBackend.load_model on a model folder, the
resident memory it added, then the logits of a fixed input (rank 0 writes both to OUT/rank-N.json and
OUT/logits.pt). Run with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, one process per rank."""

import json
import sys
import threading
import time
from pathlib import Path

import accelerate  # noqa: F401 - imported before measuring: the modules' own memory is not the model's
import torch
import torch.distributed.checkpoint  # noqa: F401
import transformers.models.qwen2.modeling_qwen2  # noqa: F401
from distill.training.backends import FsdpBackend


def anon() -> int:
    """This process's resident anonymous memory in bytes: what it allocated, not the pages of the model
    files it maps (those are the page cache's, shared, and dropped under pressure)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


path, out = sys.argv[1], Path(sys.argv[2])
backend = FsdpBackend(use_gpu=False)
before, peak, loading = anon(), [0], [True]


def watch() -> None:
    while loading[0]:
        peak[0] = max(peak[0], anon())
        time.sleep(0.005)


watcher = threading.Thread(target=watch)
watcher.start()
model = backend.load_model(path, torch.device("cpu"), lambda m: None)
loading[0] = False
watcher.join()
peak[0] = max(peak[0], anon())
local = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
(out / f"rank-{backend.rank}.json").write_text(json.dumps({"before": before, "peak": peak[0], "local": local}))
with torch.no_grad():
    logits = model(input_ids=torch.arange(24).reshape(2, 12)).logits
if backend.rank == 0:
    torch.save(logits, out / "logits.pt")
backend.close()
