"""A dataset's geometry: how its reader turns stored pixels into training images.

Outside images scored against a dataset's reference statistics (``python -m
ganray.metrics fid --images``) must take the same path, or the score measures
the difference in framing instead of the images: Fashion-MNIST's 28 px
garments are padded onto a 32 px canvas, so resizing a 28 px image to 32 px
instead adds ~27 FID points to real test images.

The path per origin (the raw reader the pixels came from; for parquet shards
the one their manifest names, with the shards' side as an intermediate step)::

    fashion-mnist   28 px -> pad to 32 px -> [prepared side] -> data.resolution
    cifar10         32 px -> [prepared side] -> data.resolution
    image-folder    any size -> centre crop + resize -> [prepared side] -> data.resolution

An image may enter at any point of its path (28 or 32 px Fashion-MNIST, the
prepared side, the training side); any other size is an error, not a resize.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from ganray.config import DataConfig
from ganray.data.dataset import DataError
from ganray.data.transforms import convert_channels, pad_center, resize
from ganray.storage import Storage

# origin -> (native side, canvas side after padding); None: any size, crop-and-resize.
NATIVE = {"fashion-mnist": (28, 32), "cifar10": (32, 32), "image-folder": None}


@dataclass(frozen=True)
class Origin:
    """Where a dataset's pixels came from."""

    source: str  # the raw reader: fashion-mnist, cifar10 or image-folder
    prepared_side: int = 0  # pixels of parquet shards (0: read from the raw source directly)


def origin_of(cfg: DataConfig, storage: Storage) -> Origin:
    """The raw reader behind ``cfg`` (parquet: from the train split's manifest)."""
    if cfg.source != "parquet":
        return Origin(cfg.source)
    from ganray.data.parquet import manifest_origin, read_manifest, split_dir

    if not cfg.uri:
        raise DataError(
            "parquet: data.uri is empty; set it to a folder written by `python -m ganray.data prepare`"
        )
    manifest, _ = read_manifest(storage, split_dir(storage, cfg.uri, "train"))
    return Origin(manifest_origin(manifest)["source"], int(manifest["resolution"]))


def path_sides(origin: Origin, resolution: int) -> list[int]:
    """The sides (pixels) an image passes through, in order, from the origin's native size."""
    native = NATIVE.get(origin.source)
    sides = list(dict.fromkeys(native)) if native else []
    for side in (origin.prepared_side, resolution):
        if side and (not sides or sides[-1] != side):
            sides.append(side)
    return sides


def conform(image: Image.Image, cfg: DataConfig, origin: Origin) -> np.ndarray:
    """One decoded image -> uint8 [C, R, R] the way ``origin``'s reader shapes its own images.

    Raises DataError when the image's size is not on the dataset's path.
    """
    im = image.convert("L" if cfg.channels == 1 else "RGB")
    sides = path_sides(origin, cfg.resolution)
    native = NATIVE.get(origin.source)
    w, h = im.size
    if native is None and not (w == h and w in sides):
        # Image folders: any size, centre-cropped and resized as folders._load_image does.
        im = ImageOps.fit(im, (sides[0], sides[0]), method=Image.Resampling.LANCZOS)
        w, h = im.size
    arr = np.asarray(im, dtype=np.uint8)
    x = (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))[None]  # [1, C, H, W]
    if w != h or w not in sides:
        raise DataError(
            f"a {w}x{h} px image cannot be scored against {origin.source} at data.resolution "
            f"{cfg.resolution}: its images pass through {' -> '.join(f'{s} px' for s in sides)}, "
            f"so save the images at one of those sizes (resizing would change the score)"
        )
    # An image at the training side is taken as it is (it may also be a native side).
    start = len(sides) - 1 if w == sides[-1] else sides.index(w)
    for side in sides[start + 1 :]:
        if native and x.shape[-1] == native[0] and side == native[1]:
            x = pad_center(x, side)
        else:
            x = resize(x, side)
    return convert_channels(x, cfg.channels)[0]
