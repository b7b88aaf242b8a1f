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

from ganray.config import ConfigError, TrainConfig


def default_device() -> torch.device:
    """CUDA when present (GPU paths switch on by themselves), else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


@dataclass(frozen=True)
class ComputePlan:
    """How a run computes: decided once by ``compute_plan``, used by the Ray trial and the Trainer."""

    device_type: str  # "cuda" or "cpu" (the index, for a Ray worker, comes from Ray)
    backend: str  # torch.distributed backend: nccl between GPUs, gloo between CPU processes
    amp_dtype: torch.dtype | None  # autocast dtype, None = full precision
    channels_last: bool  # NHWC memory format for 4-D weights and image batches
    # Dtype of the reduced blocks of a model with per-block precision (StyleGAN2's
    # num_fp16_res, NVlabs' recipe); such a model runs without autocast. None = fp32.
    block_dtype: torch.dtype | None = None

    @property
    def use_gpu(self) -> bool:
        return self.device_type == "cuda"


def compute_plan(train: TrainConfig, gpu: bool | None = None) -> ComputePlan:
    """The one place that maps the config and GPU availability to device, backend and AMP.

    ``gpu``: whether the run computes on CUDA. A Ray trial passes whether it
    requests GPUs (``train.use_gpu``, 'auto' = the cluster has some) and each
    worker whether Ray gave it one; None decides for this process:
    ``train.use_gpu`` 'auto' uses CUDA when present, 'no' never, 'yes' requires
    it. Mixed precision and channels_last apply on CUDA only ('auto' AMP is
    bf16 there; fp16 also gets a GradScaler in the Trainer).

    Two kinds of mixed precision, one per kind of model (the Trainer picks):
    autocast (``amp_dtype``) for models without per-block precision, and the
    model's own casts (``block_dtype``) for models with reduced blocks
    (StyleGAN2 with ``num_fp16_res`` > 0): 'auto' and 'fp16' give NVlabs'
    fp16 blocks (clamped by ``conv_clamp``), 'bf16' bf16 blocks, 'off' fp32.
    The model's casts keep its low resolutions, mapping, toRGB sum and D
    epilogue in fp32, which autocast would not.
    """
    if gpu is None:
        gpu = train.use_gpu != "no" and torch.cuda.is_available()
        if train.use_gpu == "yes" and not gpu:
            raise ConfigError("train.use_gpu=yes but this machine has no CUDA device; use auto or no")
    if not gpu:
        return ComputePlan("cpu", "gloo", None, False)
    amp = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[train.amp]
    block = {"auto": torch.float16, "bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[train.amp]
    return ComputePlan("cuda", "nccl", amp, train.channels_last, block)


def to_channels_last(module: nn.Module) -> nn.Module:
    """Put every 4-D parameter and buffer of ``module`` in channels_last format, in place.

    ``module.to(memory_format=torch.channels_last)`` also tries 5-D tensors and
    raises on them (a modulated conv's [1, out, in, k, k] weight), so only the
    4-D tensors are converted here; the rest keep their layout. Runs on CPU too.
    """
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.dim() == 4:
                t.data = t.data.contiguous(memory_format=torch.channels_last)
    return module


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
