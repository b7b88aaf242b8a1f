"""``python -m ganray.data prepare``: turn a source into verified Parquet shards."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ganray.cli_args import int_in, uri
from ganray.config import SOURCES, DataConfig
from ganray.data.build import SPLITS, load_split
from ganray.data.dataset import DataError
from ganray.data.parquet import write_shards
from ganray.storage import Storage, StorageError, is_local

# Prepared resolutions: the model resolutions (powers of two); smaller ones are resized up on read.
RESOLUTIONS = (8, 16, 32, 64, 128, 256)

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
    overwrite: bool = False,
) -> dict[str, Any]:
    """Read ``split`` of ``source`` (first ``limit`` images if > 0), write shards to ``dest``.

    Returns the manifest. The whole split is decoded in memory first
    (N * C * R * R bytes, e.g. 61 MB for Fashion-MNIST at 32 px). A ``dest``
    that holds anything is refused unless ``overwrite`` and it is a prepared
    dataset, which is then replaced atomically (see parquet.write_shards).
    """
    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1, got {shard_size}")
    if limit < 0:
        raise DataError(f"--limit must be 0 (all images) or a positive count, got {limit}")
    if resolution not in RESOLUTIONS:
        raise DataError(
            f"--resolution {resolution}: use a power of two ({', '.join(map(str, RESOLUTIONS))} px); "
            f"models train at 32-256 px, so prepare at the resolution you will train at"
        )
    storage = storage or Storage()
    check_dest(storage, dest, overwrite)
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


def check_dest(storage: Storage, dest: str, overwrite: bool) -> None:
    """Refuse a ``dest`` holding anything (a split subfolder aside), unless ``overwrite`` of a dataset."""
    from ganray.data.parquet import MANIFEST

    if is_local(dest) and os.path.isfile(dest.split("://", 1)[-1]):
        raise DataError(f"{dest} is a file; give a folder to prepare the dataset into")
    names = [n for n in storage.listdir(dest) if n not in SPLITS]
    if not names:
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if not overwrite:
        raise DataError(
            f"{dest} is not empty (it holds {shown}); pass --overwrite to replace the dataset there, "
            f"or choose an empty folder"
        )
    if MANIFEST not in names:
        raise DataError(
            f"--overwrite replaces a prepared dataset, but {dest} has no {MANIFEST} and holds {shown}; "
            f"choose an empty folder"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ganray.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write Parquet shards + manifest.json for a source split")
    p.add_argument("source", choices=SOURCES, help="dataset reader")
    p.add_argument("dest", type=uri(), help="output folder: local path or fsspec URI (s3://bucket/prefix)")
    p.add_argument(
        "--resolution",
        type=int,
        required=True,
        help=f"image side in pixels: {', '.join(map(str, RESOLUTIONS))}",
    )
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="1 grey, 3 RGB")
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--shard-size", type=int_in(1), default=DEFAULT_SHARD_SIZE, help="images per shard")
    p.add_argument("--limit", type=int_in(0), default=0, help="only the first N images (0 = all)")
    p.add_argument(
        "--uri",
        type=uri(allow_empty=True),
        default="",
        help="where the source lives (default: its usual location)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the prepared dataset at DEST (atomically for readers)",
    )
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
            overwrite=args.overwrite,
        )
    except (DataError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
