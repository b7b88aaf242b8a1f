"""Minibatches for the loop: global-batch-consistent, straight from the uint8 image tensor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data.distributed import DistributedSampler

from ganray.train.distributed import DistContext


class Batches:
    """Global-batch-consistent minibatches of uint8 images, scaled to [-1, 1] on the device.

    Indexes the in-memory uint8 tensor directly (no per-image collation).
    The DistributedSampler (also with one worker) fixes the order per epoch from
    the seed, so a run's data order does not depend on RNG state or worker count.
    """

    def __init__(
        self,
        images: torch.Tensor,
        indices: list[int],
        batch: int,
        seed: int,
        ctx: DistContext,
        shuffle: bool = True,
        max_steps: int = 0,
        partial: bool = False,
        channels_last: bool = False,
    ) -> None:
        self.images = images
        self.partial = partial  # keep a last, smaller batch (validation)
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.batch = batch
        self.ctx = ctx
        self.sampler = DistributedSampler(
            range(len(indices)),
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=not partial,  # else ranks' shares are padded to equal length
        )
        self.max_steps = max_steps
        self.pin = ctx.device.type == "cuda"
        self.channels_last = channels_last  # as the run's ComputePlan says (config + device)

    def __len__(self) -> int:
        n = -(-len(self.sampler) // self.batch) if self.partial else len(self.sampler) // self.batch
        return min(n, self.max_steps) if self.max_steps else n

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        self.sampler.set_epoch(epoch)
        order = self.indices[torch.as_tensor(list(self.sampler), dtype=torch.long)]
        for i in range(len(self)):
            x = self.images[order[i * self.batch : (i + 1) * self.batch]]
            if self.pin:
                x = x.pin_memory()
            x = x.to(self.ctx.device, non_blocking=True).float().div_(127.5).sub_(1.0)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x


def subset_indices(subset: Any) -> list[int]:
    return list(subset.indices) if hasattr(subset, "indices") else list(range(len(subset)))
