"""What a run leaves on storage, in one documented layout.

    RUN/                      a run (in a Tune experiment: EXPERIMENT/trials/TRIAL_ID)
      config.yaml             the full validated config
      metrics.jsonl           one JSON object per finished epoch
      metrics.parquet         the same rows as a Parquet table
      samples/epoch_NNNN.png  grid from fixed noise (epoch 0 = before training)
      tensorboard/            the same grids as TensorBoard images (ganray.train.tensorboard)
      checkpoints/epoch_NNNN.pt + .json   see ganray.checkpoint
      done.json               written when the run finished all its epochs

Readers (ganray.analyze, ganray.pull) need only this layout, not a running
cluster. Tables are rewritten whole from the run's history on every epoch,
atomically, so a crash never leaves a torn or duplicated row.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from ganray.storage import Storage, join

METRICS_JSONL = "metrics.jsonl"
METRICS_PARQUET = "metrics.parquet"
SAMPLES_DIR = "samples"


def grid_uri(run_uri: str, epoch: int) -> str:
    return join(run_uri, SAMPLES_DIR, f"epoch_{epoch:04d}.png")


def tile(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """A batch in [-1, 1] ([N, C, H, W]) as one uint8 grid image [H', W', C], ``nrow``
    images per row, ``padding`` black pixels around each (torchvision's make_grid
    layout, without importing torchvision: ~1.5 s in every trial's worker)."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    n, c, h, w = x.shape
    cols = min(nrow or max(1, int(math.sqrt(n))), n)
    rows = math.ceil(n / cols)
    grid = torch.zeros(c, rows * (h + padding) + padding, cols * (w + padding) + padding, dtype=torch.uint8)
    for i in range(n):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    return grid.permute(1, 2, 0).numpy()


def images_to_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """Encode a batch in [-1, 1] ([N, C, H, W]) as one PNG grid (grayscale or RGB)."""
    return _png(tile(images, nrow))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(buf, format="PNG")
    return buf.getvalue()


def save_grid(storage: Storage, uri: str, images: torch.Tensor) -> None:
    storage.write_bytes(uri, images_to_png(images))


def save_epoch_grid(storage: Storage, run_uri: str, epoch: int, images: torch.Tensor) -> None:
    """Rank 0: the epoch's grid under samples/, and the same PNG as a TensorBoard image."""
    from ganray.train import tensorboard

    arr = tile(images)
    png = _png(arr)
    storage.write_bytes(grid_uri(run_uri, epoch), png)
    tensorboard.write_grid(storage, run_uri, epoch, png, arr.shape)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None  # JSON has no NaN; Parquet gets a null
        out[k] = v
    return out


def write_metrics(storage: Storage, run_uri: str, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl and metrics.parquet from the full history."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_jsonable(r) for r in history]
    storage.write_text(join(run_uri, METRICS_JSONL), "".join(json.dumps(r) + "\n" for r in rows))
    if rows:
        table = pa.Table.from_pylist(rows)
        storage.atomic_write(join(run_uri, METRICS_PARQUET), lambda fh: pq.write_table(table, fh))


def read_metrics(storage: Storage, run_uri: str) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl (empty if the run wrote none yet)."""
    uri = join(run_uri, METRICS_JSONL)
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]
