"""Find a raw source's files (local, remote or default location) and read a split."""

from __future__ import annotations

import os

from ganray.config import DataConfig
from ganray.data import fashion, folders
from ganray.data.cache import localize_dir
from ganray.data.dataset import DataError, RawImages
from ganray.storage import Storage, StorageError


def _hint(source: str) -> str:
    """How to get the data of ``source``."""
    if source == "fashion-mnist":
        return fashion.HELP
    if source == "cifar10":
        return folders.CIFAR_HELP
    return (
        f"set data.uri to a folder (any fsspec URI) of {'/'.join(e[1:] for e in folders.IMAGE_EXTS)} images"
    )


def _local_root(cfg: DataConfig, storage: Storage) -> str:
    """A local folder with the files at ``cfg.uri`` (remote URIs are cached once)."""
    try:
        root = localize_dir(storage, cfg.uri, cfg.cache_dir)
    except (FileNotFoundError, StorageError) as e:
        raise DataError(
            f"{cfg.source}: cannot read data.uri {cfg.uri!r} ({e}); {_hint(cfg.source)}"
        ) from None
    if not os.path.isdir(root):
        raise DataError(f"{cfg.source}: data.uri {cfg.uri!r} is not a folder; {_hint(cfg.source)}")
    return root


def _fashion_root(cfg: DataConfig, storage: Storage, split: str) -> str:
    """The folder holding Fashion-MNIST: data.uri, the system copy, or a download."""
    if cfg.uri:
        root = _local_root(cfg, storage)
        if not fashion.has_split(root, split):
            raise DataError(f"fashion-mnist: no {split} IDX files in data.uri {cfg.uri!r}; {fashion.HELP}")
        return root
    if fashion.has_split(fashion.DEFAULT_DIR, split):
        return fashion.DEFAULT_DIR
    return fashion.torchvision_download(cfg.cache_dir)


def read_raw(cfg: DataConfig, split: str, storage: Storage, limit: int = 0) -> RawImages:
    """Read ``split`` of a raw source (not parquet); the first ``limit`` images if > 0.

    Image folders are decoded straight to ``cfg.resolution`` / ``cfg.channels``;
    array sources come back at their native size for ``transforms.fit``.
    """
    if cfg.source == "fashion-mnist":
        return fashion.read_fashion_mnist(_fashion_root(cfg, storage, split), split, limit)
    if not cfg.uri:
        what = "the folder holding cifar-10-batches-py/" if cfg.source == "cifar10" else "a folder of images"
        raise DataError(f"{cfg.source}: data.uri is empty; set it to {what}")
    root = _local_root(cfg, storage)
    if cfg.source == "cifar10":
        return folders.read_cifar10(root, split, limit)
    if cfg.source == "image-folder":
        return folders.read_image_folder(root, split, cfg.resolution, cfg.channels, limit)
    raise DataError(f"unknown raw source {cfg.source!r}; choose fashion-mnist, cifar10 or image-folder")
