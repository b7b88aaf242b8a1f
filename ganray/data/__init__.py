"""Training images: sources, preprocessing, verified Parquet shards.

Sources (``DataConfig.source``): ``fashion-mnist`` (IDX files), ``cifar10``
(torchvision's pickled batches), ``image-folder`` (png/jpg/jpeg/webp/bmp,
label = first-level subfolder) and ``parquet`` (shards written by
``python -m ganray.data prepare``, checked against their sha256).

Every split is decoded once into a single uint8 tensor [N, C, R, R]; items
and batches are float32 in [-1, 1]. Remote URIs are cached on local disk.
"""

from ganray.data.build import build_dataset
from ganray.data.cli import prepare
from ganray.data.dataset import DataError, ImageDataset, ImageSubset, train_val_split

__all__ = ["DataError", "ImageDataset", "ImageSubset", "build_dataset", "prepare", "train_val_split"]
