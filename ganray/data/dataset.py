"""In-memory image datasets: one uint8 tensor per split, floats made per batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ganray.data.transforms import to_float


class DataError(ValueError):
    """A dataset is missing, malformed or corrupt; the message names the fix."""


@dataclass(frozen=True)
class RawImages:
    """What a source reader returns, before resizing and channel conversion.

    ``images`` is uint8 [N, C, H, W] (square), ``labels`` int64 [N] and
    ``content`` a sha256 hex digest of the bytes the images came from.
    """

    images: np.ndarray
    labels: np.ndarray
    content: str


class ImageDataset(Dataset):
    """All images of one split, decoded once into a single uint8 tensor.

    ``images_uint8`` is [N, C, R, R] with pixels in [0, 255] (60k Fashion-MNIST
    images at 32 px take 61 MB); items are float32 in [-1, 1]. ``dataset_id``
    names source content, split, count, resolution, channels and preprocessing
    version, so it can key caches such as FID reference statistics.
    """

    def __init__(self, images_uint8: torch.Tensor, labels: torch.Tensor, dataset_id: str) -> None:
        if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, R, R], got {images_uint8.dtype} {tuple(images_uint8.shape)}"
            )
        if images_uint8.shape[2] != images_uint8.shape[3]:
            raise ValueError(f"images must be square, got {tuple(images_uint8.shape)}")
        if len(labels) != len(images_uint8):
            raise ValueError(f"{len(labels)} labels for {len(images_uint8)} images")
        self.images_uint8 = images_uint8
        self.labels = labels.to(torch.int64)
        self.dataset_id = dataset_id

    @property
    def resolution(self) -> int:
        """Image side in pixels."""
        return int(self.images_uint8.shape[-1])

    @property
    def channels(self) -> int:
        """1 (grey) or 3 (RGB)."""
        return int(self.images_uint8.shape[1])

    def __len__(self) -> int:
        return int(self.images_uint8.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_float(self.images_uint8[index]), int(self.labels[index])

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Float32 images [B, C, R, R] in [-1, 1] for ``indices``, in one gather."""
        return to_float(self.images_uint8[torch.as_tensor(indices, dtype=torch.long)])

    def __repr__(self) -> str:
        return f"ImageDataset({self.dataset_id!r}, n={len(self)}, shape={tuple(self.images_uint8.shape[1:])})"


class ImageSubset(Subset):
    """A view on some images of an ImageDataset with the same attributes."""

    dataset: ImageDataset

    def __init__(self, dataset: ImageDataset, indices: Sequence[int], name: str) -> None:
        super().__init__(dataset, list(indices))
        self._index = torch.as_tensor(self.indices, dtype=torch.long)
        self.dataset_id = f"{dataset.dataset_id}.{name}"

    @property
    def images_uint8(self) -> torch.Tensor:
        """The subset's images [n, C, R, R] (a copy, gathered on access)."""
        return self.dataset.images_uint8[self._index]

    @property
    def labels(self) -> torch.Tensor:
        return self.dataset.labels[self._index]

    @property
    def resolution(self) -> int:
        return self.dataset.resolution

    @property
    def channels(self) -> int:
        return self.dataset.channels

    def batch(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Float32 images for positions ``indices`` of this subset."""
        return self.dataset.batch(self._index[torch.as_tensor(indices, dtype=torch.long)])


def train_val_split(ds: ImageDataset, val_fraction: float, seed: int) -> tuple[ImageSubset, ImageSubset]:
    """Split ``ds`` into (train, val) subsets, the same way for the same seed.

    ``round(len(ds) * val_fraction)`` images (at least one when the fraction is
    positive and the dataset has two or more) go to validation; indices in each
    part are sorted so batches read memory in order.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(ds)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    tag = f"val{val_fraction:g}-seed{seed}"
    return (
        ImageSubset(ds, train.tolist(), f"train-{tag}"),
        ImageSubset(ds, val.tolist(), f"val-{tag}"),
    )
