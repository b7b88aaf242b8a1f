"""Minibatches for the loop: global-batch-consistent, straight from the uint8 image tensor.

Training (``TrainBatches``): an epoch is one pass over the training split in a
seeded order (the same for any worker count). Each step takes the next
*global* batch of that order, whose size is a function of the images seen
before the step (``train.progressive.batch_sizes``: the batch follows the
resolution), and gives rank r the r-th contiguous slice of it. The epoch ends
when the next global batch no longer fits (or after ``max_steps``), so the
number of steps per epoch changes with the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data.distributed import DistributedSampler

from ganray.data import DataError, ImageDataset, train_val_split
from ganray.train.distributed import DistContext

if TYPE_CHECKING:
    from ganray.config import Config
    from ganray.train.progressive import Schedule


class Batches:
    """(Validation) Global-batch-consistent minibatches of uint8 images, scaled to [-1, 1] on the device.

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
            yield to_model_input(self.images[order[i * self.batch : (i + 1) * self.batch]], self)


class TrainBatches:
    """Training minibatches whose global size follows the images seen (module docstring).

    ``batch_at(images)`` is the global batch of a step that starts after
    ``images`` images; it must be divisible by the world size. Contiguous
    slices per rank mean that 2 workers see the same global batch, in the same
    order, as 1 worker: minibatch-stddev groups (consecutive images) agree.
    """

    def __init__(
        self,
        images: torch.Tensor,
        indices: list[int],
        batch_at: Callable[[int], int],
        seed: int,
        ctx: DistContext,
        max_steps: int = 0,
        channels_last: bool = False,
    ) -> None:
        self.images = images
        self.indices = torch.as_tensor(indices, dtype=torch.long)
        self.batch_at, self.seed, self.ctx, self.max_steps = batch_at, seed, ctx, max_steps
        self.pin = ctx.device.type == "cuda"
        self.channels_last = channels_last

    def steps(self, images: int) -> list[int]:
        """The global batch of each step of an epoch that starts after ``images`` images seen."""
        sizes: list[int] = []
        used = 0
        while not self.max_steps or len(sizes) < self.max_steps:
            b = self.batch_at(images)
            if used + b > len(self.indices):
                break
            sizes.append(b)
            used, images = used + b, images + b
        return sizes

    def epoch(self, epoch: int, sizes: list[int]) -> Iterator[torch.Tensor]:
        """This rank's slices of the global batches ``sizes`` (from ``steps``) of ``epoch``."""
        # The permutation DistributedSampler(shuffle=True, seed) draws: 1-worker runs keep their order.
        order = torch.randperm(len(self.indices), generator=torch.Generator().manual_seed(self.seed + epoch))
        order, start = self.indices[order], 0
        ws, rank = self.ctx.world_size, self.ctx.rank
        for b in sizes:
            per = b // ws
            yield to_model_input(self.images[order[start + rank * per : start + (rank + 1) * per]], self)
            start += b


def to_model_input(x: torch.Tensor, b: Batches | TrainBatches) -> torch.Tensor:
    """uint8 images -> float in [-1, 1] on the device, in the memory format ``b`` asks for."""
    if b.pin:
        x = x.pin_memory()
    x = x.to(b.ctx.device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last) if b.channels_last else x


def subset_indices(subset: Any) -> list[int]:
    return list(subset.indices) if hasattr(subset, "indices") else list(range(len(subset)))


def build_batches(
    cfg: Config, ds: ImageDataset, ctx: DistContext, schedule: Schedule, channels_last: bool
) -> tuple[TrainBatches, Batches]:
    """The run's training batches (global size from ``schedule``) and validation batches.

    DataError if the training split cannot fill the largest batch the run will use.
    """
    train, val = train_val_split(ds, cfg.data.val_fraction, cfg.train.seed)
    largest, _, res = max(
        (schedule.batch_size(r), r in schedule.batch_sizes, r) for r in schedule.resolutions()
    )
    if largest > len(train):
        key = (
            "train.batch_size"
            if res not in schedule.batch_sizes
            else f"train.progressive.batch_sizes ({res} px)"
        )
        raise DataError(
            f"{len(train)} training images give no full batch of {largest} ({key}); "
            f"lower {key.split()[0]} or raise data.subset"
        )
    seed = cfg.train.seed
    train_b = TrainBatches(
        ds.images_uint8,
        subset_indices(train),
        schedule.batch_at,
        seed,
        ctx,
        cfg.train.max_steps_per_epoch,
        channels_last,
    )
    local_batch = cfg.train.batch_size // ctx.world_size
    val_b = Batches(
        ds.images_uint8,
        subset_indices(val),
        local_batch,
        seed,
        ctx,
        shuffle=False,
        partial=True,
        channels_last=channels_last,
    )
    return train_b, val_b
