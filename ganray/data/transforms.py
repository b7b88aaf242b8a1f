"""Vectorised preprocessing of uint8 image batches shaped [N, C, H, W].

Everything here works on whole arrays (no per-image Python loop), so shaping
60k Fashion-MNIST images takes milliseconds. Pixels stay uint8 in [0, 255]
until ``to_float`` maps them to float32 in [-1, 1] at batch time.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MIN_RESOLUTION = 8  # pixels; smaller images carry too little to train on
MAX_RESOLUTION = 256  # pixels; the largest model resolution
# Resize in chunks of at most this many pixel values to bound temporary memory.
_RESIZE_BUDGET = 1 << 24
# ITU-R 601-2 luma weights in thousandths, the same as PIL's RGB -> "L".
_LUMA = np.array([299, 587, 114], dtype=np.uint32)


def pad_center(images: np.ndarray, side: int) -> np.ndarray:
    """Zero-pad [N, C, H, W] images centrally to ``side`` x ``side`` pixels."""
    _, _, h, w = images.shape
    if h > side or w > side:
        raise ValueError(f"cannot pad {h}x{w} images down to {side}x{side}")
    top, left = (side - h) // 2, (side - w) // 2
    pads = ((0, 0), (0, 0), (top, side - h - top), (left, side - w - left))
    return np.pad(images, pads)


def resize(images: np.ndarray, side: int) -> np.ndarray:
    """Resize square [N, C, H, W] uint8 images to ``side`` pixels (bilinear, antialiased).

    Antialiasing matters when shrinking (no aliasing moire); when enlarging
    bilinear keeps a zero background at zero, unlike bicubic ringing.
    """
    n, c, h, w = images.shape
    if h == side and w == side:
        return images
    out = np.empty((n, c, side, side), dtype=np.uint8)
    chunk = max(1, _RESIZE_BUDGET // (c * max(h * w, side * side)))
    for start in range(0, n, chunk):
        # torch resizes uint8 directly (rounded, saturated) without a float copy.
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk]))
        y = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + chunk] = y.numpy()
    return out


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Convert [N, C, H, W] uint8 images between grey (1) and RGB (3)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        out = np.empty((images.shape[0], 3, *images.shape[2:]), dtype=np.uint8)
        out[:] = images  # a broadcast copy, ~10x faster than np.repeat
        return out
    if have == 3 and channels == 1:
        n, _, h, w = images.shape
        out = np.empty((n, 1, h, w), dtype=np.uint8)
        chunk = max(1, _RESIZE_BUDGET // (3 * h * w))  # bounds the uint32 temporaries
        for start in range(0, n, chunk):
            part = images[start : start + chunk].astype(np.uint32)
            # Integer luma with rounding: (299 R + 587 G + 114 B + 500) // 1000.
            weighted = np.tensordot(_LUMA, part, axes=([0], [1]))
            out[start : start + chunk, 0] = (weighted + 500) // 1000
        return out
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def fit(images: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    """Resize square images to ``resolution`` and convert them to ``channels``.

    Channel conversion runs on the side with fewer channels, so the resize does
    the least work.
    """
    if images.shape[1] > channels:
        return resize(convert_channels(images, channels), resolution)
    return convert_channels(resize(images, resolution), channels)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)
