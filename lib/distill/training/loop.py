"""The training function every worker runs, whichever launcher started it (see backends.py, launch.py).

    train(spec, backend) -> {"rank", "start_step", "steps", "final_loss"}

`spec` is plain JSON (TrainConfig's fields plus `data`, `out_dir`, `student`), so it crosses process
boundaries as is. The loop:

- reads the packed training set memory-mapped (an Arrow IPC file): every worker sees every row without
  holding a copy, and picks its own rows;
- visits the rows in a fixed order per epoch (a permutation seeded by seed + epoch, wrapped around to fill
  the last global batch), so a resumed run sees exactly the rows the killed one would have seen;
- per optimizer step, worker r takes rows r, r + world, ... of the step's global batch, in micro batches
  (gradient accumulation);
- scales each worker's summed token loss by world / (the global batch's target tokens), so the averaged
  gradient is that of the mean loss over every target token in the global batch, whatever the packing;
- warms the learning rate up linearly, then decays it on a cosine;
- checkpoints every `checkpoint_every` steps and at the end (written aside, then renamed, so a kill never
  leaves half a checkpoint), keeps the last `keep_checkpoints`, and resumes from the newest;
- appends one JSON line per step to metrics.jsonl (rank 0): loss, lr, grad norm, tokens, tokens/s;
- writes the final model (Hugging Face format, with the tokenizer) to out_dir/model.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from distill.faults import crash_point
from distill.training.loss import token_loss_sum
from distill.training.packing import IGNORE, position_ids

CHECKPOINT_FORMAT = 2  # 2: the state as the backend writes it (FSDP: sharded) beside meta.pt; 1: one state.pt


class PackedData:
    """The packed training set (input_ids, labels, seq_lens, loss_tokens per row), memory-mapped."""

    def __init__(self, path: str):
        import pyarrow as pa

        self.table = pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
        self.loss_tokens = self.table.column("loss_tokens").to_numpy()
        self.lengths = self.table.column("seq_lens").to_pylist()

    def __len__(self) -> int:
        return self.table.num_rows

    def row(self, i: int) -> tuple[list[int], list[int], list[int]]:
        t = self.table
        return (t.column("input_ids")[i].as_py(), t.column("labels")[i].as_py(), t.column("seq_lens")[i].as_py())


@dataclass(frozen=True)
class Plan:
    """Which rows each optimizer step trains on, for any worker: a pure function of the config."""

    rows: int
    world: int
    global_batch: int
    micro_batch: int
    epochs: int
    max_steps: int | None
    seed: int

    @property
    def accum(self) -> int:
        return self.global_batch // (self.world * self.micro_batch)

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.rows // self.global_batch)

    @property
    def total_steps(self) -> int:
        total = self.epochs * self.steps_per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    @functools.lru_cache(maxsize=2)  # noqa: B019 - a handful of plans per process
    def order(self, epoch: int):
        import numpy as np

        order = np.random.default_rng(self.seed + epoch).permutation(self.rows)
        return np.resize(order, self.steps_per_epoch * self.global_batch)  # wraps around to fill the last batch

    def step_rows(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        return self.order(epoch)[k * self.global_batch:(k + 1) * self.global_batch].tolist()

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        mine = self.step_rows(step)[rank::self.world]
        return [mine[i:i + self.micro_batch] for i in range(0, len(mine), self.micro_batch)]


def lr_factor(step: int, total: int, warmup_ratio: float, min_ratio: float) -> float:
    """Linear warmup over ceil(warmup_ratio * total) steps, then cosine decay to min_ratio."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def collate(rows: list[tuple[list[int], list[int], list[int]]], pad_id: int):
    """Tensors for one micro batch. Shorter rows are padded with one more 'sample' (positions from 0, labels
    ignored), so padding is masked off by the same per-sample attention as packing."""
    import torch

    width = max(len(ids) for ids, _, _ in rows)
    ids, labels, pos = [], [], []
    for row_ids, row_labels, lens in rows:
        pad = width - len(row_ids)
        ids.append(row_ids + [pad_id] * pad)
        labels.append(row_labels + [IGNORE] * pad)
        pos.append(position_ids(lens + ([pad] if pad else [])))
    return torch.tensor(ids), torch.tensor(labels), torch.tensor(pos)


def train(spec: dict, backend) -> dict:
    """One training run in the process group `backend` (launch.run_worker's; it closes it)."""
    import contextlib

    import torch
    from transformers import AutoTokenizer

    rank, world = backend.rank, backend.size
    torch.set_num_threads(spec["threads"] or max(1, (os.cpu_count() or 1) // world))
    torch.manual_seed(spec["seed"])
    out = Path(spec["out_dir"])
    device = torch.device(f"cuda:{backend.local_rank}") if spec["use_gpu"] else torch.device("cpu")
    if spec["use_gpu"]:
        torch.cuda.set_device(device)
    bf16 = spec["use_gpu"] and spec["bf16"]

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    data = PackedData(spec["data"])
    plan = Plan(len(data), world, spec["global_batch"], spec["micro_batch"], spec["epochs"], spec["max_steps"],
                spec["seed"])
    tokenizer = AutoTokenizer.from_pretrained(spec["student"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def setup(model) -> None:  # before sharding
        model.config.use_cache = False
        if spec["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    model = backend.load_model(spec["student"], device, setup)  # FSDP: sharded as it is read
    optimizer = backend.optimizer(torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(0.9, 0.95),
                                                    weight_decay=spec["weight_decay"]), model, plan.accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(
        s, plan.total_steps, spec["warmup_ratio"], spec["min_lr_ratio"]))
    start = _resume(backend, model, optimizer, scheduler, out, rank)
    if rank == 0:
        _trim_metrics(out / "metrics.jsonl", start)

    model.train()
    loss = float("nan")
    for step in range(start, plan.total_steps):
        t0 = time.perf_counter()
        rows = plan.step_rows(step)
        target_tokens = int(sum(data.loss_tokens[i] for i in rows))
        step_tokens = sum(sum(data.lengths[i]) for i in rows)
        local = 0.0
        micro = plan.micro_batches(step, rank)
        for k, batch in enumerate(micro):
            backend.micro_step(model, last=k == len(micro) - 1)
            ids, labels, pos = (t.to(device) for t in collate([data.row(i) for i in batch], pad_id))
            summed = token_loss_sum(model, ids, labels, pos, autocast, spec["loss_chunk_tokens"])
            (summed * world / max(1, target_tokens)).backward()
            local += float(summed.detach())
        norm = backend.clip_and_step(model, optimizer, spec["grad_clip"])
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        optimizer.zero_grad()  # (Horovod's wrapper takes no arguments; torch sets grads to None)
        loss = backend.sum(local) / max(1, target_tokens)
        seconds = time.perf_counter() - t0
        if rank == 0:
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step + 1, "epoch": step // plan.steps_per_epoch + 1, "loss": loss,
                                    "lr": lr, "grad_norm": norm, "tokens": step_tokens,
                                    "target_tokens": target_tokens, "seconds": seconds,
                                    "tokens_per_s": step_tokens / seconds, "world": world,
                                    "launcher": backend.name}) + "\n")
        done = step + 1
        if done % spec["checkpoint_every"] == 0 or done == plan.total_steps:
            _checkpoint(backend, model, optimizer, scheduler, out, done, spec["keep_checkpoints"])
        crash_point("train.step")

    if start < plan.total_steps or not (out / "model" / "config.json").exists():
        _save_model(backend, model, tokenizer, out / "model")
    backend.barrier()
    return {"rank": rank, "start_step": start, "steps": plan.total_steps, "final_loss": loss}


def _checkpoint(backend, model, optimizer, scheduler, out: Path, step: int, keep: int) -> None:
    """checkpoints/step-N/: the backend's model and optimizer state (FSDP: one shard per rank, never gathered)
    and meta.pt (scheduler, step, format, launcher), written aside and renamed by rank 0 once complete."""
    import torch

    folder = out / "checkpoints" / f"step-{step:07d}"
    partial = folder.with_name(folder.name + ".partial")
    if backend.rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    backend.barrier()
    backend.save_state(model, optimizer, partial)  # a collective for FSDP: every rank calls it
    backend.barrier()
    if backend.rank == 0:
        torch.save({"scheduler": scheduler.state_dict(), "step": step, "format": CHECKPOINT_FORMAT,
                    "launcher": backend.name}, partial / "meta.pt")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
        for old in sorted(_checkpoints(out))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    backend.barrier()


def _checkpoints(out: Path) -> list[Path]:
    return [p for p in (out / "checkpoints").glob("step-*") if not p.name.endswith(".partial")]


def _resume(backend, model, optimizer, scheduler, out: Path, rank: int) -> int:
    """Load the newest complete checkpoint (every rank reads it: out_dir is shared storage); its step."""
    import torch

    found = sorted(_checkpoints(out))
    if not found:
        return 0
    meta_path = found[-1] / "meta.pt"
    # format 1 (before sharded checkpoints): one state.pt with the whole state and the metadata
    legacy = not meta_path.exists()
    meta = torch.load(found[-1] / "state.pt" if legacy else meta_path, map_location="cpu", weights_only=False)
    if meta.get("launcher") != backend.name:
        raise RuntimeError(f"checkpoint {found[-1]} was written by the {meta.get('launcher')} launcher; "
                           f"resume it with that launcher or start in a new train.name")
    if legacy:
        backend.load_full_state(model, optimizer, meta)
    else:
        backend.load_state(model, optimizer, found[-1])
    scheduler.load_state_dict(meta["scheduler"])
    if rank == 0:
        print(f"train: resuming from {found[-1].name} (step {meta['step']})", flush=True)
    return int(meta["step"])


def _trim_metrics(path: Path, start: int) -> None:
    """Drop lines past the checkpoint a resumed run starts from: those steps are trained again."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= start]
    path.write_text("".join(line + "\n" for line in keep))


def _save_model(backend, model, tokenizer, folder: Path) -> None:
    """The trained weights as a plain Hugging Face model folder (backend.save_model: FSDP writes it one
    gathered tensor at a time), aside, then renamed by rank 0."""
    partial = folder.with_name(folder.name + ".partial")
    if backend.rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    backend.barrier()
    model.config.use_cache = True  # off for training only; whoever loads the student wants generation's cache
    backend.save_model(model, partial)
    if backend.rank == 0:
        tokenizer.save_pretrained(partial)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
