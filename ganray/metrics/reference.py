"""Reference (real-image) statistics, computed once and cached on storage.

One .npz per (dataset_id, split, resolution, backbone + weights, image count)
under a cache folder URI; it holds mu and sigma (float64) and the features
(float32, for KID and precision/recall). ``dataset_id`` already names the
dataset's content and preprocessing, so a changed dataset gets a new file.
Trials with the same data and backbone share the file; it is written
atomically, so concurrent trials at worst compute it twice.

The reference images are a fixed, seeded random subset of ``min(num_samples, N)``
images (a random subset, because folder datasets are sorted by class).
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ganray.config import DataConfig
from ganray.metrics.backbones import Backbone
from ganray.metrics.features import extract, stats_of, uint8_batches
from ganray.metrics.sampling import agreed, gather_rows, share
from ganray.storage import Storage, join
from ganray.train.distributed import DistContext

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the file layout or the subset rule changes
SUBSET_SEED = 20191  # fixed: the same images for every trial and run


@dataclass
class Reference:
    """Statistics of the real images a score compares against."""

    mu: np.ndarray  # [D] float64
    sigma: np.ndarray  # [D, D] float64
    features: np.ndarray  # [n, D] float32
    num_images: int
    dataset_id: str
    uri: str  # where the cache file is
    from_cache: bool  # True if read from storage, False if computed now


def cache_name(dataset_id: str, split: str, resolution: int, backbone: Backbone, n: int) -> str:
    """File name of a reference; every part of the key is in it."""
    raw = f"ref-{dataset_id}-{split}-r{resolution}-{backbone.name}-{backbone.weights_tag}-n{n}-v{FORMAT}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw) + ".npz"


def subset_indices(total: int, n: int) -> np.ndarray:
    """The fixed ``n`` of ``total`` images used as reference, in ascending order."""
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(SUBSET_SEED).choice(total, n, replace=False))


def _save(storage: Storage, uri: str, ref: Reference, meta: dict[str, Any]) -> None:
    def write(fh: io.BufferedIOBase) -> None:
        np.savez(
            fh,
            mu=ref.mu,
            sigma=ref.sigma,
            features=ref.features,
            **{k: np.asarray(v) for k, v in meta.items()},
        )

    storage.atomic_write(uri, write)


def _load(storage: Storage, uri: str, dataset_id: str) -> Reference:
    with np.load(io.BytesIO(storage.read_bytes(uri))) as z:
        return Reference(
            z["mu"], z["sigma"], z["features"], int(z["num_images"]), dataset_id, uri, from_cache=True
        )


def reference_stats(
    data_cfg: DataConfig,
    backbone: Backbone,
    storage: Storage,
    cache_uri: str,
    *,
    num_samples: int,
    batch_size: int,
    split: str = "train",
    dataset: Any = None,
    ctx: DistContext | None = None,
) -> Reference:
    """Load the cached reference for this key, or compute (split across ranks) and cache it.

    ``dataset`` (an ImageDataset) saves re-reading the data; by default it is
    ``build_dataset(data_cfg, split)``. All ranks return the same Reference.
    """
    from ganray.data import build_dataset

    ctx = ctx or DistContext(device=backbone.device)

    def locate() -> tuple[Any, int, str, bool | None]:
        ds = dataset if dataset is not None else build_dataset(data_cfg, split, storage)
        n = min(num_samples, len(ds))
        uri = join(cache_uri, cache_name(ds.dataset_id, split, ds.resolution, backbone, n))
        return ds, n, uri, storage.exists(uri) if ctx.is_main else None

    ds, n, uri, exists = agreed(ctx, locate, "reference images")
    # Rank 0 decides, so all ranks take the same branch (and the same collectives).
    if ctx.broadcast_object(exists):
        return agreed(ctx, lambda: _load(storage, uri, ds.dataset_id), f"reading {uri}")
    idx = subset_indices(len(ds), n)
    mine = share(n, ctx.rank, ctx.world_size)

    def features() -> Any:
        images = ds.images_uint8  # one access: ImageSubset gathers a copy per access
        return extract(uint8_batches(images, idx[mine.start : mine.stop], batch_size), backbone)

    ext = agreed(ctx, features, "reference features")
    feats = gather_rows(ctx, ext.features, n)
    mu, sigma = stats_of(feats) if ctx.distributed else (ext.mu, ext.sigma)
    ref = Reference(mu, sigma, feats, n, ds.dataset_id, uri, from_cache=False)
    if ctx.is_main:
        meta = {
            "num_images": n,
            "dataset_id": ds.dataset_id,
            "split": split,
            "backbone": backbone.name,
            "weights_tag": backbone.weights_tag,
            "format": FORMAT,
        }
        try:
            _save(storage, uri, ref, meta)
        except Exception as e:  # noqa: BLE001 - the statistics are computed; only the cache is missing
            log.warning(
                "reference statistics not cached at %s (%s: %s); computed again next time",
                uri,
                type(e).__name__,
                e,
            )
        else:
            log.info(
                "reference statistics for %s (%d images, %s) cached at %s",
                ds.dataset_id,
                n,
                backbone.name,
                uri,
            )
    return ref
