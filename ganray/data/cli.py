"""``python -m ganray.data prepare``: turn a source into verified Parquet shards."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ganray.config import SOURCES, DataConfig
from ganray.data.build import SPLITS, load_split
from ganray.data.dataset import DataError
from ganray.data.parquet import write_shards
from ganray.storage import Storage, StorageError

DEFAULT_SHARD_SIZE = 5000  # images per shard: ~5 MB of 32 px PNGs, ~300 MB at 256 px RGB


def prepare(
    source: str,
    dest: str,
    resolution: int,
    channels: int = 1,
    split: str = "train",
    shard_size: int = DEFAULT_SHARD_SIZE,
    limit: int = 0,
    uri: str = "",
    storage: Storage | None = None,
    cache_dir: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Read ``split`` of ``source`` (first ``limit`` images if > 0), write shards to ``dest``.

    Returns the manifest. The whole split is decoded in memory first
    (N * C * R * R bytes, e.g. 61 MB for Fashion-MNIST at 32 px).
    """
    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1, got {shard_size}")
    storage = storage or Storage()
    cfg = DataConfig(source=source, uri=uri, resolution=resolution, channels=channels, cache_dir=cache_dir)
    start = time.perf_counter()
    ds = load_split(cfg, split, storage, limit)
    seconds = time.perf_counter() - start
    log(f"read {len(ds)} {source} {split} images at {resolution} px x {channels} ch in {seconds:.1f} s")
    meta = {
        "source": source,
        "source_uri": uri,
        "source_id": ds.dataset_id,
        "split": split,
        "origin": _origin(cfg, split, ds.dataset_id, storage),
    }
    images, labels = ds.images_uint8.numpy(), ds.labels.numpy()
    manifest = write_shards(storage, dest, images, labels, meta, shard_size, log)
    seconds = time.perf_counter() - start
    log(f"wrote {len(manifest['shards'])} shards and manifest.json to {dest} in {seconds:.1f} s")
    return manifest


def _origin(cfg: DataConfig, split: str, dataset_id: str, storage: Storage) -> dict[str, Any]:
    """The raw dataset the images come from (a parquet source passes on its own origin)."""
    if cfg.source != "parquet":
        return {"source": cfg.source, "uri": cfg.uri, "dataset_id": dataset_id}
    from ganray.data.parquet import manifest_origin, read_manifest, split_dir

    return manifest_origin(read_manifest(storage, split_dir(storage, cfg.uri, split))[0])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ganray.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write Parquet shards + manifest.json for a source split")
    p.add_argument("source", choices=SOURCES, help="dataset reader")
    p.add_argument("dest", help="output folder: local path or fsspec URI (s3://bucket/prefix)")
    p.add_argument("--resolution", type=int, required=True, help="image side in pixels (8..256)")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="1 grey, 3 RGB")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="images per shard")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    p.add_argument("--uri", default="", help="where the source lives ('' = its default location)")
    p.add_argument("--cache-dir", default="", help="local cache for remote sources ('' = ~/.cache/ganray)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        prepare(
            args.source,
            args.dest,
            args.resolution,
            channels=args.channels,
            split=args.split,
            shard_size=args.shard_size,
            limit=args.limit,
            uri=args.uri,
            cache_dir=args.cache_dir,
        )
    except (DataError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
