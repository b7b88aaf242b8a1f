"""Improved precision and recall (Kynkäänniemi et al. 2019) on k-NN feature manifolds.

Each sample set defines a manifold: the union of balls around its points whose
radius is the distance to the point's k-th nearest neighbour in the same set.
Precision = share of generated points inside the real manifold (fidelity);
recall = share of real points inside the generated manifold (coverage).
Distances are computed in blocks of rows, so memory is rows x N floats.
"""

from __future__ import annotations

import numpy as np
import torch

ROW_BLOCK = 1024  # rows of the distance matrix per block (1024 x 10k x 4 B = 40 MB)


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a, b, compute_mode="use_mm_for_euclid_dist")


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour in ``x`` (itself excluded)."""
    out = []
    for start in range(0, len(x), ROW_BLOCK):
        d = _pairwise(x[start : start + ROW_BLOCK], x)
        # k + 1 smallest: the first is the point itself (distance ~0).
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def coverage(manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor) -> float:
    """Share of ``probes`` within the radius of at least one manifold point."""
    inside = 0
    for start in range(0, len(probes), ROW_BLOCK):
        d = _pairwise(probes[start : start + ROW_BLOCK], manifold)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / len(probes)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of ``fake`` against ``real`` features with k nearest neighbours."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images per side")
    r = torch.from_numpy(np.ascontiguousarray(real, dtype=np.float32))
    f = torch.from_numpy(np.ascontiguousarray(fake, dtype=np.float32))
    precision = coverage(r, knn_radii(r, k), f)
    recall = coverage(f, knn_radii(f, k), r)
    return precision, recall
