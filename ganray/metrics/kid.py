"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel.

Averaged over random subsets, as in StyleGAN2-ADA's metrics: KID is near 0
for two samples of the same distribution (it can be slightly negative, being
unbiased) and, unlike FID, has no bias that depends on the sample count.
"""

from __future__ import annotations

import numpy as np
import torch

# Subsets are processed in chunks of at most this many kernel values (x 8 bytes in float64):
# few large ops instead of many small ones, which stall on thread synchronisation on a busy CPU.
CHUNK_VALUES = 1 << 23


def _kernel_sums(x: torch.Tensor, y: torch.Tensor, d: int, skip_diagonal: bool) -> torch.Tensor:
    """Per subset, the sum of (x.y / d + 1)^3 over pairs; [s, m, d] x [s, m, d] -> [s] float64."""
    k = torch.bmm(x, y.transpose(1, 2)).double().div_(d).add_(1).pow_(3)  # products in float32
    total = k.sum(dim=(1, 2))
    return total - k.diagonal(dim1=1, dim2=2).sum(1) if skip_diagonal else total


def kernel_distance(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    num_subsets: int = 100,
    max_subset_size: int = 1000,  # images per subset (capped by the smaller set)
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) over subsets of the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3."""
    rng = np.random.default_rng(seed)
    d = real.shape[1]
    m = min(len(real), len(fake), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per side, got {len(real)} and {len(fake)}")
    picks = [
        (rng.choice(len(fake), m, replace=False), rng.choice(len(real), m, replace=False))
        for _ in range(num_subsets)
    ]
    real_t = torch.from_numpy(np.ascontiguousarray(real, dtype=np.float32))
    fake_t = torch.from_numpy(np.ascontiguousarray(fake, dtype=np.float32))
    per_chunk = max(1, CHUNK_VALUES // (m * m))
    values = []
    for start in range(0, num_subsets, per_chunk):
        chunk = picks[start : start + per_chunk]
        x = fake_t[torch.from_numpy(np.stack([p[0] for p in chunk]))]  # [s, m, d]
        y = real_t[torch.from_numpy(np.stack([p[1] for p in chunk]))]
        a = _kernel_sums(x, x, d, skip_diagonal=True) + _kernel_sums(y, y, d, skip_diagonal=True)
        b = _kernel_sums(x, y, d, skip_diagonal=False)
        values.append(((a / (m - 1) - b * 2 / m) / m).numpy())
    v = np.concatenate(values)
    return float(v.mean()), float(v.std())
