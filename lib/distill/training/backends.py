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


class HorovodBackend:
    name = "horovod"

    def __init__(self, use_gpu: bool):
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()

    def prepare(self, model):
        return model

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

    def full_state(self, model, optimizer) -> dict | None:
        """Model and optimizer state for a checkpoint (every worker holds it whole; rank 0 returns it)."""
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict()} if self.rank == 0 else None

    def load_state(self, model, optimizer, state: dict) -> None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])

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

    def prepare(self, model):
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

    def full_state(self, model, optimizer) -> dict | None:
        """Gathered (unsharded) model and optimizer state on rank 0; every rank must call this."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        msd, osd = get_state_dict(model, optimizer,
                                  options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {"model": msd, "optimizer": osd} if self.rank == 0 else None

    def load_state(self, model, optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))

    def barrier(self) -> None:
        self.dist.barrier()

    def close(self) -> None:
        self.dist.destroy_process_group()

    def _device(self):
        import torch

        return torch.device(f"cuda:{self.local_rank}") if self.device_type == "cuda" else torch.device("cpu")


def _decoder_layers(model) -> list:
    """The transformer blocks of a Hugging Face causal LM (model.model.layers for Llama/Qwen/Mistral...)."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    return list(layers) if layers is not None else []


BACKENDS = {"horovod": HorovodBackend, "torch_distributor": FsdpBackend}
