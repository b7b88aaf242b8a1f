"""Training batches: the global batch follows the images seen, ranks take contiguous slices of it."""

from __future__ import annotations

import torch
from torch.utils.data.distributed import DistributedSampler

from ganray.train.batches import TrainBatches
from ganray.train.distributed import DistContext

CPU = torch.device("cpu")
N = 23  # images in the split: the last, partial global batch is dropped


def images():
    """uint8 images whose first pixel is their index, so a batch tells which images it holds."""
    x = torch.zeros(40, 1, 4, 4, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(40, dtype=torch.uint8)
    return x


def ids(x):
    return ((x[:, 0, 0, 0] + 1) * 127.5).round().long().tolist()


def batches(rank=0, world=1, max_steps=0):
    # Global batch 4 until 8 images are seen, then 6: a schedule like train.progressive.batch_sizes.
    return TrainBatches(
        images(),
        list(range(10, 10 + N)),
        lambda seen: 4 if seen < 8 else 6,
        5,
        DistContext(rank, world, CPU),
        max_steps,
    )


def test_sizes_follow_the_images_seen_and_the_epoch_is_one_pass():
    b = batches()
    assert b.steps(0) == [4, 4, 6, 6]  # 20 of 23 images; a further 6 does not fit
    assert b.steps(8) == [6, 6, 6]  # an epoch starting later in the schedule: fewer, bigger steps
    assert batches(max_steps=3).steps(0) == [4, 4, 6]
    one = [ids(x) for x in b.epoch(1, b.steps(0))]
    assert [len(x) for x in one] == [4, 4, 6, 6]
    flat = sum(one, [])
    assert len(set(flat)) == 20 and set(flat) <= set(range(10, 10 + N))  # each image at most once


def test_one_worker_keeps_the_seeded_order_of_before():
    sampler = DistributedSampler(range(N), num_replicas=1, rank=0, shuffle=True, seed=5)
    sampler.set_epoch(3)
    before = [10 + i for i in sampler]
    b = batches()
    assert sum((ids(x) for x in b.epoch(3, b.steps(0))), []) == before[:20]


def test_two_ranks_take_contiguous_slices_of_the_same_global_batches():
    one = batches()
    r0, r1 = batches(0, 2), batches(1, 2)
    sizes = one.steps(0)
    assert r0.steps(0) == r1.steps(0) == sizes  # every rank plans the same steps
    for g, a, b in zip(one.epoch(2, sizes), r0.epoch(2, sizes), r1.epoch(2, sizes), strict=True):
        assert ids(a) + ids(b) == ids(g)  # rank 0 the first half, rank 1 the second, in order
