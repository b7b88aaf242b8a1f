"""Rank-safe helpers: one place knows about torch.distributed.

The in-process trainer runs with ``DistContext()`` (rank 0 of 1); the Ray Train
worker builds one from the initialized process group. Everything else asks
this object instead of calling torch.distributed directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn


def default_device() -> torch.device:
    """CUDA when present (GPU paths switch on by themselves), else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


@dataclass
class DistContext:
    """Who this process is in the job, and on which device it computes."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=default_device)

    @classmethod
    def from_process_group(cls, device: torch.device | None = None) -> DistContext:
        """Read rank and world size from an initialized torch.distributed group."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), device or default_device())
        return cls(device=device or default_device())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over ranks (identity on one process)."""
        if self.distributed:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-shaped tensors from all ranks along dim 0."""
        if not self.distributed:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def broadcast_object(self, obj: object) -> object:
        """Send a picklable object from rank 0 to all ranks."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or the module itself)."""
    return module.module if hasattr(module, "module") else module
