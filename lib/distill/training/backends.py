"""The two ways the training loop runs on several workers, behind one small interface.

- `HorovodBackend`: data parallel. Every worker holds the whole model; gradients are averaged by Horovod's
  allreduce (gloo on CPU, NCCL on GPU when Horovod is built with it). Fast and simple while the model, its
  gradients and the optimizer state fit on one device: up to ~7B parameters on an 80 GB GPU in bf16 with
  AdamW, less with long sequences.
- `FsdpBackend`: PyTorch FSDP (fully_shard). Parameters, gradients and optimizer state are sharded across
  workers, so a 32B student trains on 8 GPUs that could not each hold it. Launched by Spark's
  TorchDistributor (torch.distributed: gloo on CPU, NCCL on GPU).

Both average gradients over workers; the loop scales each worker's loss so that the average is the loss
summed over the global batch's target tokens divided by their count (see loop.py).
"""

from __future__ import annotations

import os
from pathlib import Path


class HorovodBackend:
    name = "horovod"

    def __init__(self, use_gpu: bool):
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()

    def load_model(self, path: str, device, setup):
        """The student, whole, on this worker's device (`setup` runs on it first)."""
        return _read_whole(path, device, setup)

    def optimizer(self, optimizer, model, accum: int):
        hvd = self.hvd
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)  # every worker starts from rank 0's weights
        # backward_passes_per_step: gradients are accumulated locally and allreduced once per optimizer step.
        # The wrapper is a new optimizer over the same parameter groups and starts with empty state, so the
        # loop loads a checkpoint's optimizer state into it, after this call. No broadcast_optimizer_state:
        # every worker loads the same checkpoint, and its initialising zero-gradient step would count one
        # step too many in Adam's bias correction.
        return hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters(),
                                        backward_passes_per_step=accum)

    def micro_step(self, model, last: bool) -> None:
        pass  # Horovod counts backward passes itself (backward_passes_per_step)

    def clip_and_step(self, model, optimizer, max_norm: float):
        import torch

        optimizer.synchronize()  # finish the allreduce, then clip the averaged gradients
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        with optimizer.skip_synchronize():
            optimizer.step()
        return float(norm)

    def sum(self, value: float) -> float:
        import torch

        return float(self.hvd.allreduce(torch.tensor([value], dtype=torch.float64), op=self.hvd.Sum)[0])

    def save_state(self, model, optimizer, folder: Path) -> None:
        """Model and optimizer state into a checkpoint folder: every worker holds it whole; rank 0 writes it."""
        import torch

        if self.rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, folder / "state.pt")

    def load_state(self, model, optimizer, folder: Path) -> None:
        import torch

        self.load_full_state(model, optimizer, torch.load(folder / "state.pt", map_location="cpu",
                                                          weights_only=False))

    def load_full_state(self, model, optimizer, state: dict) -> None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])

    def save_model(self, model, folder: Path) -> None:
        """The weights as a Hugging Face model folder (safetensors), written by rank 0."""
        if self.rank == 0:
            model.save_pretrained(folder)

    def barrier(self) -> None:
        self.sum(0.0)

    def close(self) -> None:
        self.hvd.shutdown()


class FsdpBackend:
    name = "torch_distributor"

    def __init__(self, use_gpu: bool):
        import torch.distributed as dist

        if not dist.is_initialized():  # TorchDistributor starts torchrun, which sets RANK, WORLD_SIZE, ...
            dist.init_process_group("nccl" if use_gpu else "gloo")
        self.dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device_type = "cuda" if use_gpu else "cpu"

    def load_model(self, path: str, device, setup):
        """The student, sharded, without any rank ever holding all of it: built on the meta device (no
        memory), `setup` run on it, sharded (`fully_shard` per decoder layer, then the rest), then each rank
        allocates only its own shards and reads only its slices of the weights from the model's safetensors
        files (torch.distributed.checkpoint's Hugging Face reader).

        A model whose LM head is tied to its embeddings is read whole first and then sharded: materializing
        a meta model gives the two modules separate tensors, and FSDP would then train them apart. Tying is
        a small model's trait (Qwen2.5 up to 3B); the large students FSDP is for (Qwen2.5-32B) are untied."""
        import torch
        import torch.distributed.checkpoint as dcp
        from accelerate import init_empty_weights
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(path)
        if getattr(config, "tie_word_embeddings", False):
            return self._shard(_read_whole(path, device, setup))
        with init_empty_weights(include_buffers=False):  # parameters on meta; buffers (rotary tables) real
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        setup(model)
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        self._shard(model)
        model.to_empty(device=device)  # this rank's shards only, uninitialized; buffers are put back below
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        state = get_model_state_dict(model)  # the sharded parameters, filled in place
        dcp.load(state, storage_reader=dcp.HuggingFaceStorageReader(path))
        set_model_state_dict(model, state)
        return model

    def _shard(self, model):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device_type, (self.size,))
        # one FSDP unit per decoder layer (gathered just in time for its forward and backward), then the rest
        for layer in _decoder_layers(model):
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def optimizer(self, optimizer, model, accum: int):
        return optimizer

    def micro_step(self, model, last: bool) -> None:
        model.set_requires_gradient_sync(last)  # reduce-scatter gradients only on the last micro batch

    def clip_and_step(self, model, optimizer, max_norm: float):
        import torch

        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        optimizer.step()
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def sum(self, value: float) -> float:
        import torch

        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        self.dist.all_reduce(t)
        return float(t[0])

    def save_state(self, model, optimizer, folder: Path) -> None:
        """Each rank writes its own shard of model and optimizer state (torch.distributed.checkpoint, under
        folder/shards/): nothing is gathered, so no process ever holds the whole state. Every rank calls it."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        msd, osd = get_state_dict(model, optimizer)  # sharded (DTensor) state, as each rank holds it
        dcp.save({"model": msd, "optimizer": osd}, checkpoint_id=str(folder / "shards"))

    def load_state(self, model, optimizer, folder: Path) -> None:
        """Each rank reads its own shard back (a different world size reshards on load)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        msd, osd = get_state_dict(model, optimizer)  # the sharded layout to read into
        state = {"model": msd, "optimizer": osd}
        dcp.load(state, checkpoint_id=str(folder / "shards"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])

    def load_full_state(self, model, optimizer, state: dict) -> None:
        """A whole (gathered) state, as checkpoints of format 1 hold it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))

    def save_model(self, model, folder: Path, shard_bytes: int = 2 * 2**30) -> None:
        """The weights as a Hugging Face model folder (safetensors shards and their index), one tensor at a
        time: each is gathered from the ranks (a collective: every rank calls this), and rank 0 writes a file
        whenever `shard_bytes` are waiting. Rank 0 holds at most one file's worth, never the whole model."""
        import json

        import torch
        from safetensors.torch import save_file

        files: dict[str, str] = {}
        pending: dict[str, torch.Tensor] = {}
        total = waiting = 0

        def flush() -> None:
            nonlocal waiting
            name = f"model-{len(set(files.values())) + 1:05d}.safetensors"
            save_file(pending, str(folder / name), metadata={"format": "pt"})
            files.update(dict.fromkeys(pending, name))
            pending.clear()
            waiting = 0

        tied = _tied_keys(model)  # left out, as save_pretrained does (loading ties them again)
        for key, value in model.state_dict().items():
            if key in tied:  # the same on every rank: the collectives below stay in step
                continue
            full = value.full_tensor() if hasattr(value, "full_tensor") else value
            if self.rank == 0:
                pending[key] = full.detach().to("cpu").contiguous()
                size = pending[key].numel() * pending[key].element_size()
                total, waiting = total + size, waiting + size
                if waiting >= shard_bytes:
                    flush()
            del full
        if self.rank == 0:
            if pending:
                flush()
            index = {"metadata": {"total_size": total}, "weight_map": files}
            (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
            model.config.save_pretrained(folder)
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(folder)

    def barrier(self) -> None:
        self.dist.barrier()

    def close(self) -> None:
        self.dist.destroy_process_group()

    def _device(self):
        import torch

        return torch.device(f"cuda:{self.local_rank}") if self.device_type == "cuda" else torch.device("cpu")


def _read_whole(path: str, device, setup):
    """The student read whole onto `device` (`setup` runs on it before it is returned)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    setup(model)
    return model


def _tied_keys(model) -> set[str]:
    """The state-dict key of an LM head tied to the input embeddings (none when untied)."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return set()
    head = model.get_output_embeddings()
    return {f"{name}.weight" for name, module in model.named_modules() if head is not None and module is head}


def _decoder_layers(model) -> list:
    """The transformer blocks of a Hugging Face causal LM (model.model.layers for Llama/Qwen/Mistral...)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    return list(layers) if layers is not None else []


BACKENDS = {"horovod": HorovodBackend, "torch_distributor": FsdpBackend}
