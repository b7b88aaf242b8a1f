"""Fashion-MNIST from its IDX files (gzipped or not), decoded with numpy.

The 28x28 images are framed on a 32x32 canvas by zero-padding 2 px per side
(zero is the background), the DCGAN/LeNet convention. Other resolutions are
resized from that canvas, so the garment fills 28/32 of the frame at every
resolution and results at 32, 64 or 128 px compare like for like.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from ganray.data.cache import cache_root
from ganray.data.dataset import DataError, RawImages
from ganray.data.transforms import pad_center

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"  # where the dataset-fashion-mnist package installs
CANVAS = 32  # pixels: 28 px images padded by 2 px on each side
_PREFIX = {"train": "train", "test": "t10k"}
_SUBDIRS = ("", "FashionMNIST/raw", "raw")  # plain folder or torchvision's layout
HELP = (
    "install it with `apt-get install dataset-fashion-mnist` (files in "
    f"{DEFAULT_DIR}), or set data.uri to a folder (any fsspec URI) holding "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
    "and t10k-labels-idx1-ubyte.gz"
)


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Decode an IDX file of unsigned bytes (gzipped or raw) into a uint8 array."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{name}: corrupt gzip ({e}); download the file again") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{name}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(
            f"{name}: {len(data) - header} data bytes, expected {expected} for shape {dims}; truncated?"
        )
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def _find(root: str, split: str, kind: str) -> str | None:
    """Path of ``<prefix>-<kind>-idxN-ubyte[.gz]`` (or the ``.idxN`` spelling) under root."""
    idx = "idx3" if kind == "images" else "idx1"
    prefix = _PREFIX[split]
    for sub in _SUBDIRS:
        for base in (f"{prefix}-{kind}-{idx}-ubyte", f"{prefix}-{kind}.{idx}-ubyte"):
            for ext in (".gz", ""):
                path = os.path.join(root, sub, base + ext)
                if os.path.isfile(path):
                    return path
    return None


def has_split(root: str, split: str) -> bool:
    """True when ``root`` holds both IDX files of ``split``."""
    return _find(root, split, "images") is not None and _find(root, split, "labels") is not None


def read_fashion_mnist(root: str, split: str, limit: int = 0) -> RawImages:
    """Read one split from local folder ``root``; the first ``limit`` images if > 0."""
    paths = [_find(root, split, kind) for kind in ("images", "labels")]
    if None in paths:
        raise DataError(f"fashion-mnist: no {_PREFIX[split]}-* IDX files in {root!r}; {HELP}")
    images, labels = (parse_idx(Path(p).read_bytes(), p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"fashion-mnist: {paths[0]} {images.shape} does not match {paths[1]} {labels.shape}")
    # Hash decoded bytes so the id is the same for gzipped and plain copies.
    digest = hashlib.sha256(images)
    digest.update(labels)
    if limit:
        images, labels = images[:limit], labels[:limit]
    framed = pad_center(images[:, None], CANVAS)
    return RawImages(framed, labels.astype(np.int64), digest.hexdigest())


def torchvision_download(cache_dir: str = "") -> str:
    """Download Fashion-MNIST with torchvision into the cache; return the raw folder."""
    root = os.path.join(cache_root(cache_dir), "torchvision")
    raw = os.path.join(root, "FashionMNIST", "raw")
    if has_split(raw, "train") and has_split(raw, "test"):
        return raw
    from torchvision.datasets import FashionMNIST

    try:
        for train in (True, False):
            FashionMNIST(root, train=train, download=True)
    except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
        raise DataError(f"fashion-mnist: not found locally and the download failed ({e}); {HELP}") from e
    return raw
