"""DistributedDataParallel helpers: the same code runs in one process or under torchrun.

Under ``torchrun --nproc_per_node=N`` the environment holds ``WORLD_SIZE``/``RANK``;
:func:`setup` then starts a process group (gloo on CPU, nccl on CUDA). Everything here is
a no-op in a single process.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def is_main_process() -> bool:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def launched_distributed() -> bool:
    """True when started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str = "cpu") -> bool:
    """Initialise the process group if launched by torchrun; returns True if distributed."""
    if not launched_distributed() or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return True


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, device: str = "cpu") -> nn.Module:
    """Wrap in DDP when a process group is up; otherwise return the model unchanged."""
    if world_size() == 1 or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    if not any(p.requires_grad for p in model.parameters()):
        return model
    if str(device).startswith("cuda"):
        idx = torch.cuda.current_device()
        return nn.parallel.DistributedDataParallel(model, device_ids=[idx])
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank (identity in one process)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world_size()


def rank0_flag(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (identity in one process): a decision all ranks act on together."""
    if world_size() == 1:
        return flag
    dev = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if flag else 0], device=dev)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Make every rank hold rank ``src``'s parameters and buffers."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def state_checksum(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, shapes and exact bytes)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(list(module.state_dict().items())):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def replica_checksums(module: nn.Module) -> list[str]:
    """Every rank's :func:`state_checksum`, gathered (one entry in a single process)."""
    mine = state_checksum(unwrap(module))
    if world_size() == 1:
        return [mine]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, mine)
    return [str(x) for x in out]
