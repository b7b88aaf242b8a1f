"""CIFAR-10 (torchvision's pickled batches) and folders of image files."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ganray.data.dataset import DataError, RawImages

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_HELP = (
    "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extract it and set "
    f"data.uri to the folder holding {CIFAR_DIR}/ (data_batch_1..5, test_batch)"
)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Classes a CIFAR batch may reference: numpy array reconstruction only, so a
# pickle from a shared bucket cannot run arbitrary code when loaded.
_PICKLE_ALLOWED = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _cifar_batch(path: str) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(file bytes, images [n, 3, 32, 32], labels [n]) of one CIFAR-10 batch file."""
    blob = Path(path).read_bytes()
    try:
        entry = _BatchUnpickler(io.BytesIO(blob), encoding="latin1").load()
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry["labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, AttributeError, TypeError) as e:
        raise DataError(
            f"cifar10: {path} is not a CIFAR-10 python batch ({type(e).__name__}: {e}); {CIFAR_HELP}"
        ) from None
    if len(images) != len(labels):
        raise DataError(f"cifar10: {path} has {len(images)} images but {len(labels)} labels")
    return blob, images, labels


def read_cifar10(root: str, split: str, limit: int = 0) -> RawImages:
    """Read a split from ``root`` (the cifar-10-batches-py folder or its parent)."""
    nested = os.path.join(root, CIFAR_DIR)
    folder = nested if os.path.isdir(nested) else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    digest, images, labels = hashlib.sha256(), [], []
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise DataError(f"cifar10: {path} not found; {CIFAR_HELP}")
        blob, imgs, labs = _cifar_batch(path)
        digest.update(blob)
        images.append(imgs)
        labels.append(labs)
        if limit and sum(len(x) for x in labels) >= limit:
            break  # later batches are not needed for the first ``limit`` images
    end = limit or None
    return RawImages(np.concatenate(images)[:end], np.concatenate(labels)[:end], digest.hexdigest())


def list_images(root: str, split: str) -> tuple[str, list[tuple[str, int]]]:
    """(base folder, sorted [(relative path, label)]) of the images of ``split``.

    The label is the index of the image's first-level subfolder among the sorted
    subfolder names, or 0 for images directly in the base. The "test" split is
    ``<root>/test``; the "train" split is everything else under ``root``.
    """
    base = root if split == "train" else os.path.join(root, "test")
    if not os.path.isdir(base):
        raise DataError(f"image-folder: {base!r} is not a folder (split {split!r})")
    files = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        if split == "train" and rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != "test"]  # keep the test split out of train
        files += [
            os.path.normpath(os.path.join(rel_dir, f)) for f in filenames if f.lower().endswith(IMAGE_EXTS)
        ]
    files.sort()
    classes = sorted({f.split(os.sep, 1)[0] for f in files if os.sep in f})
    index = {c: i for i, c in enumerate(classes)}
    return base, [(f, index.get(f.split(os.sep, 1)[0], 0) if os.sep in f else 0) for f in files]


def _load_image(path: str, resolution: int, channels: int) -> tuple[bytes, np.ndarray]:
    """(sha256 of the file, [C, R, R] uint8): centre-cropped to a square, then resized."""
    blob = Path(path).read_bytes()
    try:
        with Image.open(io.BytesIO(blob)) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            im = ImageOps.fit(im, (resolution, resolution), method=Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"image-folder: cannot decode {path}: {e}; delete or replace the file") from None
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return hashlib.sha256(blob).digest(), arr


def read_image_folder(root: str, split: str, resolution: int, channels: int, limit: int = 0) -> RawImages:
    """Decode every image of ``split`` under ``root`` straight to the target size.

    Decoding runs in a few threads (PIL releases the GIL while it decodes and
    resizes), so large photos such as AFHQ's 512 px images load in parallel.
    """
    base, items = list_images(root, split)
    if limit:
        items = items[:limit]
    if not items:
        raise DataError(f"image-folder: no images ({', '.join(IMAGE_EXTS)}) under {base!r}")
    paths = [os.path.join(base, rel) for rel, _ in items]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        loaded = list(pool.map(lambda p: _load_image(p, resolution, channels), paths))
    digest = hashlib.sha256()
    for (rel, label), (file_sha, _) in zip(items, loaded):
        digest.update(f"{rel}\0{label}\0".encode() + file_sha)
    images = np.stack([arr for _, arr in loaded])
    labels = np.array([label for _, label in items], dtype=np.int64)
    return RawImages(images, labels, digest.hexdigest())
