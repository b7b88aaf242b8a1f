"""Where generated images go: one grid image, a folder of PNGs, or an NVlabs-style ``.npz``.

Every writer consumes batches of images, so memory stays bounded by one batch
whatever the image count (a grid is bounded by MAX_GRID instead). Writes go
through ganray.storage (atomic: a crash never leaves a torn file under the
final name).

* ``--out grid.png`` / ``grid.jpg``: one tiled image (PNG, or real JPEG bytes);
* ``--out DIR`` (an existing folder, a trailing ``/`` or a name without an
  extension): ``seed0000.png``, ``seed0001.png``, ... one image per seed, as
  NVlabs' generate.py names them and pytorch-fid / clean-fid read folders;
* ``--out FILE.npz``: one ``arr_0`` array, uint8 ``[N, H, W, C]`` (the layout of
  the ADM/NVlabs evaluation suites), streamed into the zip entry batch by batch.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from typing import IO

import numpy as np
import torch
from PIL import Image

from ganray.storage import Storage, StorageError, is_local, join

MAX_GRID = 1024  # images in one grid (32 x 32 tiles); more goes to a folder or an .npz
MAX_SEEDS = 10_000_000  # images per call (~10 GB of 32 px RGB); the writers stream, this bounds disk
GRID_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


class OutputError(ValueError):
    """An output path or a seed list cannot be used; the message says what to pass instead."""


def parse_seeds(text: str) -> list[int]:
    """``"0-9999"``, ``"1,5,7-9"`` -> seeds, as NVlabs' generate.py parses them (ranges inclusive)."""
    seeds: list[int] = []
    for part in str(text).split(","):
        m = _RANGE.match(part.strip())
        if m is None:
            raise OutputError(f"--seeds {text!r}: {part.strip()!r} is not N or A-B (e.g. 0-9999 or 1,5,7-9)")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise OutputError(f"--seeds {text!r}: range {lo}-{hi} runs backwards; write {hi}-{lo}")
        if hi > 2**32 - 1:
            raise OutputError(f"--seeds {text!r}: {hi} is beyond the largest seed, {2**32 - 1}")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise OutputError(f"--seeds {text!r}: more than {MAX_SEEDS} images; split the job")
        seeds.extend(range(lo, hi + 1))
    if len(set(seeds)) != len(seeds):
        raise OutputError(f"--seeds {text!r}: a seed repeats; each image is named by its seed")
    return seeds


def output_kind(out: str, storage: Storage) -> str:
    """'grid', 'folder' or 'npz' for ``--out``; OutputError for anything else."""
    ext = posixpath.splitext(out.rstrip("/"))[1].lower()
    if out.endswith("/"):
        return "folder"
    if ext == ".npz":
        return "npz"
    if ext in GRID_FORMATS:
        return "grid"  # check_output refuses an existing folder of that name
    if (is_local(out) and os.path.isdir(out)) or not (ext or (is_local(out) and os.path.exists(out))):
        return "folder"
    raise OutputError(
        f"--out {out}: cannot tell what to write; end it in .png or .jpg (one grid), .npz "
        f"(uint8 NHWC array) or give a folder (one PNG per seed)"
    )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """A batch in [-1, 1] ([N, C, H, W]) as uint8 [N, H, W, C]."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    """One [H, W, C] uint8 image as PNG or JPEG bytes."""
    buf = io.BytesIO()
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_grid(storage: Storage, out: str, batches: Iterable[torch.Tensor]) -> int:
    """Tile every image into one PNG/JPEG at ``out``; return the image count."""
    from ganray.train.artifacts import tile

    images = torch.cat(list(batches))
    fmt = GRID_FORMATS[posixpath.splitext(out)[1].lower()]
    storage.write_bytes(out, _encode(tile(images), fmt))
    return len(images)


def write_folder(storage: Storage, out: str, batches: Iterable[torch.Tensor], seeds: list[int]) -> int:
    """``seed%04d.png`` per image into folder ``out`` (refused when it already holds files)."""
    if storage.listdir(out):
        raise OutputError(
            f"--out {out} already holds files; a folder scored by pytorch-fid must hold only these "
            f"images: give an empty or new folder"
        )
    i = 0
    for batch in batches:
        for arr in to_uint8(batch):
            storage.write_bytes(join(out, f"seed{seeds[i]:04d}.png"), _encode(arr, "PNG"))
            i += 1
    return i


def _stream_npz(fh: IO[bytes], batches: Iterable[torch.Tensor], shape: tuple[int, ...]) -> int:
    """Write ``arr_0.npy`` (uint8, ``shape``) into a zip on ``fh``, one batch at a time."""
    n = 0
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False}
    with (
        zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf,
        zf.open("arr_0.npy", "w", force_zip64=True) as entry,
    ):
        np.lib.format.write_array_header_2_0(entry, {**header, "shape": shape})
        for batch in batches:
            arr = to_uint8(batch)
            entry.write(np.ascontiguousarray(arr).tobytes())
            n += len(arr)
    if n != shape[0]:
        raise OutputError(f"npz: wrote {n} images, expected {shape[0]}")
    return n


def write_npz(storage: Storage, out: str, batches: Iterable[torch.Tensor], shape: tuple[int, ...]) -> int:
    """Stream a uint8 NHWC ``arr_0`` into ``out``; a remote ``out`` is staged in a local temp file."""
    _check_space(out, int(np.prod(shape)))
    if is_local(out):
        box: list[int] = []
        storage.atomic_write(out, lambda fh: box.append(_stream_npz(fh, batches, shape)))
        return box[0]
    with tempfile.TemporaryDirectory(prefix="ganray-npz-") as tmp:
        local = os.path.join(tmp, "out.npz")
        with open(local, "wb") as fh:
            n = _stream_npz(fh, batches, shape)
        storage.upload_file(local, out)
    return n


def _check_space(out: str, nbytes: int) -> None:
    """Refuse up front when the local disk cannot hold ``nbytes`` (+5%)."""
    folder = os.path.dirname(os.path.abspath(out)) if is_local(out) else tempfile.gettempdir()
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    if nbytes * 1.05 > free:
        raise OutputError(
            f"--out {out}: needs about {nbytes / 1e9:.1f} GB and {folder} has {free / 1e9:.1f} GB free; "
            f"generate fewer images (--seeds) or write elsewhere"
        )


Writer = Callable[[Storage, str, Iterable[torch.Tensor], list[int], tuple[int, ...]], int]
WRITERS: dict[str, Writer] = {
    "grid": lambda storage, out, batches, seeds, shape: write_grid(storage, out, batches),
    "folder": lambda storage, out, batches, seeds, shape: write_folder(storage, out, batches, seeds),
    "npz": lambda storage, out, batches, seeds, shape: write_npz(storage, out, batches, shape),
}


def check_output(out: str, kind: str, count: int, storage: Storage) -> None:
    """Fail before loading anything when ``out`` cannot take ``count`` images of ``kind``."""
    if kind == "grid" and count > MAX_GRID:
        raise OutputError(
            f"a grid holds at most {MAX_GRID} images, asked for {count}; write them to a folder "
            f"(--out DIR) or an array (--out FILE.npz)"
        )
    if kind != "folder" and is_local(out) and os.path.isdir(out):
        raise OutputError(f"--out {out} is a folder; give a file name")
    if kind == "folder" and is_local(out) and os.path.isfile(out.rstrip("/")):
        raise OutputError(f"--out {out} is a file, not a folder")
    parent = os.path.dirname(os.path.abspath(out.rstrip("/"))) if is_local(out) else ""
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise StorageError(f"--out {out}: {parent} is a file, so nothing can be written below it")
