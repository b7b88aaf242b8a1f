"""Build an ImageDataset from a DataConfig: read, shape, identify."""

from __future__ import annotations

import torch

from ganray.config import SOURCES, DataConfig
from ganray.data.dataset import DataError, ImageDataset, RawImages
from ganray.data.parquet import read_parquet
from ganray.data.sources import read_raw
from ganray.data.transforms import MAX_RESOLUTION, MIN_RESOLUTION, fit
from ganray.storage import Storage

SPLITS = ("train", "test")
# Bump when resizing, padding or channel conversion change, so caches keyed by
# dataset_id (FID reference statistics) are rebuilt.
PREPROCESS_VERSION = 1


def _check(cfg: DataConfig, split: str) -> None:
    if cfg.source not in SOURCES:
        raise DataError(f"data.source {cfg.source!r} is unknown; choose one of: {', '.join(SOURCES)}")
    if split not in SPLITS:
        raise DataError(f"split {split!r} is unknown; choose train or test")
    if not MIN_RESOLUTION <= cfg.resolution <= MAX_RESOLUTION:
        raise DataError(
            f"data.resolution {cfg.resolution} is out of range [{MIN_RESOLUTION}, {MAX_RESOLUTION}] pixels"
        )
    if cfg.channels not in (1, 3):
        raise DataError(f"data.channels {cfg.channels} must be 1 (grey) or 3 (RGB)")


def dataset_id(source: str, split: str, raw: RawImages, resolution: int, channels: int) -> str:
    """A stable name for these exact pixels: source content, split, count, shape, preprocessing."""
    n = len(raw.labels)
    return f"{source}.{split}.{raw.content[:16]}.n{n}.r{resolution}.c{channels}.p{PREPROCESS_VERSION}"


def load_split(cfg: DataConfig, split: str, storage: Storage, limit: int = 0) -> ImageDataset:
    """The first ``limit`` images (all if 0) of ``split``, shaped to cfg.resolution/channels.

    Parquet shards prepared at another resolution or channel count are resized
    (bilinear) and converted on read; preparing at the training size avoids that.
    """
    _check(cfg, split)
    if cfg.source == "parquet":
        if not cfg.uri:
            raise DataError(
                "parquet: data.uri is empty; set it to a folder written by `python -m ganray.data prepare`"
            )
        raw = read_parquet(storage, cfg.uri, split, limit, cfg.cache_dir)
    else:
        raw = read_raw(cfg, split, storage, limit)
    images = fit(raw.images, cfg.resolution, cfg.channels)
    ident = dataset_id(cfg.source, split, raw, cfg.resolution, cfg.channels)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(raw.labels), ident)


def build_dataset(cfg: DataConfig, split: str = "train", storage: Storage | None = None) -> ImageDataset:
    """The images of ``split`` as one in-memory dataset (cfg.subset limits the train split).

    Nothing is cached between calls in memory; remote files are cached on disk
    under cfg.cache_dir (or ~/.cache/ganray).
    """
    limit = cfg.subset if split == "train" else 0
    return load_split(cfg, split, storage or Storage(), limit)
