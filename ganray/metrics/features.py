"""Streaming feature extraction and float64 mean/covariance.

Images arrive as an iterable of batches and are dropped after their batch,
so memory holds one batch of images plus (optionally) the features:
10k x 2048 float32 Inception features are 80 MB, 10k x 128 classifier
features 5 MB. FID alone needs only the running sums (``keep_features=False``);
KID and precision/recall need the features themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ganray.metrics.backbones import Backbone


class MeanCov:
    """Running mean and covariance in float64 over feature batches.

    Sums are taken around a fixed shift (the first batch's mean), which avoids
    the cancellation of the naive E[xx^T] - mu mu^T when features have a large
    mean relative to their spread. Rows are buffered and folded in with one
    float64 matmul per ``flush_rows`` rows: few large ops, in torch's thread
    pool (numpy's BLAS would add a second pool competing for the same cores).
    """

    def __init__(self, dim: int, flush_rows: int = 4096) -> None:
        self.n = 0
        self.flush_rows = flush_rows
        self.shift: torch.Tensor | None = None
        self.s1 = torch.zeros(dim, dtype=torch.float64)  # sum of (x - shift)
        self.s2 = torch.zeros(dim, dim, dtype=torch.float64)  # sum of (x - shift)(x - shift)^T
        self._pending: list[torch.Tensor] = []
        self._pending_rows = 0

    def update(self, feats: np.ndarray | torch.Tensor) -> None:
        x = torch.as_tensor(feats).detach().to("cpu")
        if self.shift is None:
            self.shift = x.double().mean(dim=0)
        self._pending.append(x)
        self._pending_rows += x.shape[0]
        if self._pending_rows >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        x = torch.cat(self._pending).double() - self.shift
        self._pending, self._pending_rows = [], 0
        self.n += x.shape[0]
        self.s1 += x.sum(dim=0)
        self.s2.addmm_(x.T, x)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu [D], sigma [D, D]) as float64 numpy, with the unbiased (n - 1) covariance like np.cov."""
        self._flush()
        if self.n < 2:
            raise ValueError(f"need at least 2 images for a covariance, got {self.n}")
        m = self.s1 / self.n
        sigma = (self.s2 - self.n * torch.outer(m, m)) / (self.n - 1)
        return (self.shift + m).numpy(), sigma.numpy()

    @property
    def count(self) -> int:
        """Rows seen so far (flushed or not)."""
        return self.n + self._pending_rows


@dataclass
class Extracted:
    """What one pass of a backbone over some images produced."""

    mu: np.ndarray | None  # [D] float64; None for fewer than 2 images (a rank's empty share)
    sigma: np.ndarray | None  # [D, D] float64
    num_images: int
    features: np.ndarray | None = None  # [N, D] float32 when kept
    logits: np.ndarray | None = None  # [N, K] float32 when kept and the backbone has logits


def extract(
    batches: Iterable[torch.Tensor],
    backbone: Backbone,
    *,
    keep_features: bool = True,
    keep_logits: bool = False,
) -> Extracted:
    """Run ``backbone`` over image batches in [-1, 1]; accumulate stats and keep what is asked.

    An empty stream is valid (a rank with no share): its arrays have 0 rows, so
    every rank still takes part in the same gathers.
    """
    acc = MeanCov(backbone.feature_dim)
    keep_logits = keep_logits and backbone.logits_dim > 0
    feats = [np.zeros((0, backbone.feature_dim), np.float32)]
    logits = [np.zeros((0, backbone.logits_dim), np.float32)]
    for x in batches:
        f, lg = backbone.forward_all(x)
        f = f.float().cpu()
        acc.update(f)
        if keep_features:
            feats.append(f.numpy())
        if keep_logits:
            logits.append(lg.float().cpu().numpy())
    mu, sigma = acc.result() if acc.count >= 2 else (None, None)
    return Extracted(
        mu=mu,
        sigma=sigma,
        num_images=acc.count,
        features=np.concatenate(feats) if keep_features else None,
        logits=np.concatenate(logits) if keep_logits else None,
    )


def stats_of(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a feature matrix, in float64 (same as np.mean / np.cov)."""
    acc = MeanCov(features.shape[1])
    acc.update(features)
    return acc.result()


def compute_image_stats(
    batches: Iterable[torch.Tensor], backbone: Backbone, keep_features: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Streaming (mu, sigma, features or None) of image batches in [-1, 1] under ``backbone``."""
    out = extract(batches, backbone, keep_features=keep_features)
    if out.mu is None:
        raise ValueError(f"image statistics need at least 2 images, got {out.num_images}")
    return out.mu, out.sigma, out.features


def uint8_batches(images_uint8: torch.Tensor, indices: np.ndarray, batch_size: int) -> Iterable[torch.Tensor]:
    """Float batches in [-1, 1] from a uint8 [N, C, R, R] tensor, converting one batch at a time."""
    for start in range(0, len(indices), batch_size):
        idx = torch.as_tensor(indices[start : start + batch_size], dtype=torch.long)
        yield images_uint8[idx].to(torch.float32).div_(127.5).sub_(1.0)
