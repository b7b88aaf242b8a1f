"""Generated images for evaluation: fixed seeds, eval mode, rank shares, gathering.

Sample i always comes from latent z_i drawn by its own generator seeded with
(seed, i), so the evaluated set does not depend on the batch size or the
number of ranks. Rank r takes a contiguous share of the indices; gathering
the shares in rank order restores the global order. The global RNG state
(used by the training loop) is saved and restored around every generator call,
which also fixes any noise the generator draws internally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from ganray.train.distributed import DistContext, unwrap

T = TypeVar("T")
_SEED_STRIDE = 1_000_003  # a prime: seeds for (seed, i) pairs never collide for i < stride


def share(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous slice of ``n`` items (sizes differ by at most one)."""
    return range(n * rank // world_size, n * (rank + 1) // world_size)


def sample_seed(seed: int, index: int, stream: int = 0) -> int:
    """Seed of sample ``index``; ``stream`` separates uses (images, PPL pairs)."""
    return (seed * 7 + stream) * _SEED_STRIDE + index


def latents(indices: range, latent_dim: int, seed: int, stream: int = 0) -> torch.Tensor:
    """z [len(indices), latent_dim] on the CPU, one seeded draw per sample index."""
    g = torch.Generator()
    out = torch.empty(len(indices), latent_dim)
    for row, i in enumerate(indices):
        g.manual_seed(sample_seed(seed, i, stream))
        out[row] = torch.randn(latent_dim, generator=g)
    return out


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no autograd inside; every submodule's own train flag restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        for m, training in flags:
            m.training = training


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run with the global RNG seeded to ``seed``, restoring the caller's RNG state after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=True):
        torch.manual_seed(seed)
        yield


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round images in [-1, 1] to the 256 levels of a saved PNG (as real images are)."""
    return ((x + 1) * 127.5).round_().clamp_(0, 255).div_(127.5).sub_(1.0)


def generated_batches(
    G: nn.Module, indices: range, batch_size: int, device: torch.device, seed: int
) -> Iterator[torch.Tensor]:
    """Images of samples ``indices`` in batches, in [-1, 1] on 8-bit levels, G in eval mode.

    No truncation: G(z) is called as is. A DDP wrapper is unwrapped so that
    ranks generating different numbers of batches never meet in a collective.
    """
    G = unwrap(G)
    for start in range(indices.start, indices.stop, batch_size):
        part = range(start, min(start + batch_size, indices.stop))
        z = latents(part, G.latent_dim, seed).to(device)
        with eval_mode(G), isolated_rng(sample_seed(seed, start, stream=1), device):
            x = G(z)
        yield quantize(x.float())


def gather_rows(ctx: DistContext, rows: np.ndarray, n_total: int) -> np.ndarray:
    """Concatenate every rank's ``rows`` (shares of ``n_total`` items) in rank order."""
    if not ctx.distributed:
        return rows
    counts = [len(share(n_total, r, ctx.world_size)) for r in range(ctx.world_size)]
    pad = np.zeros((max(counts), *rows.shape[1:]), dtype=rows.dtype)
    pad[: len(rows)] = rows
    t = torch.from_numpy(pad)
    if torch.distributed.get_backend() == "nccl":
        t = t.to(ctx.device)
    full = ctx.all_gather_cat(t).cpu().numpy()
    step = max(counts)
    return np.concatenate([full[r * step : r * step + c] for r, c in enumerate(counts)])


class EvaluationError(RuntimeError):
    """An evaluation step failed (on this rank or another); every rank raises it at the same step."""


def agreed(ctx: DistContext | None, step: Callable[[], T], what: str) -> T:
    """Run a collective-free ``step`` on every rank, then agree on whether it failed anywhere.

    Every rank reaches the one all-reduce whether its step failed or not, so a
    failure on some ranks never leaves the others waiting in the next collective:
    all raise EvaluationError here, together, and training can go on.
    """
    try:
        out, err = step(), None
    except Exception as e:  # noqa: BLE001 - any failure must reach the agreement below
        out, err = None, e
    failed = float(err is not None)
    if ctx is not None and ctx.distributed:
        failed = ctx.all_reduce_sum(torch.tensor([failed], device=ctx.device)).item()
    if err is not None:
        raise EvaluationError(f"{what}: {type(err).__name__}: {err}") from err
    if failed:
        raise EvaluationError(f"{what} failed on {int(failed)} other rank(s); see their logs")
    return out
