"""Style operations on any generator with a mapping network.

The interface is the registry's (ganray.models.registry): ``G.mapping(z) -> w``,
``G.synthesis(ws) -> images`` where ws is ``[N, num_ws, w_dim]`` (one style per
synthesis layer, or ``[N, w_dim]`` broadcast to all), ``G.num_ws``, and
optionally a tracked ``G.w_avg`` (StyleGAN2); without it the W average is
estimated from mapped noise. These are minimal, generic versions for the DCGAN
mapping variants (dcgan-mapping, dcgan-adain, dcgan-demod) that also serve
StyleGAN2 (its tracked w_avg; constant noise inputs); a family with its own
style tools can replace any of them without touching the report.

All functions are deterministic given their seeds and return images in
[-1, 1], ``[N, C, H, W]``.
"""

from __future__ import annotations

import inspect as pyinspect

import torch
from torch import nn

W_AVG_SAMPLES = 2000  # latents mapped to estimate the W average when G tracks none


def has_style(G: nn.Module) -> bool:
    """True if G exposes the mapping/synthesis interface."""
    return all(hasattr(G, a) for a in ("mapping", "synthesis", "num_ws"))


def z_from_seeds(G: nn.Module, seeds: list[int]) -> torch.Tensor:
    """One latent z ~ N(0, I) per seed, ``[len(seeds), latent_dim]``."""
    return torch.stack([torch.randn(G.latent_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def w_average(G: nn.Module, n: int = W_AVG_SAMPLES, seed: int = 123) -> torch.Tensor:
    """The W average ``[w_dim]``: G's tracked one if it has it, else the mean of n mapped latents."""
    if getattr(G, "w_avg", None) is not None:
        return G.w_avg.detach().float().reshape(-1)
    z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed))
    return ws_from_z(G, z)[:, 0].mean(0)


@torch.no_grad()
def synthesize(G: nn.Module, ws: torch.Tensor) -> torch.Tensor:
    """``G.synthesis(ws)``, with constant noise where the synthesis has noise inputs (StyleGAN2), so
    every figure shows the styles' effect alone and is the same on every run."""
    if "noise_mode" in pyinspect.signature(G.synthesis.forward).parameters:
        return G.synthesis(ws, noise_mode="const")
    return G.synthesis(ws)


@torch.no_grad()
def ws_from_z(G: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Per-layer styles ``[N, num_ws, w_dim]`` of latents z (a single w is repeated for every layer)."""
    w = G.mapping(z)
    return w.reshape(z.shape[0], 1, G.w_dim).expand(-1, G.num_ws, -1).clone() if w.dim() == 2 else w


@torch.no_grad()
def ws_from_seeds(
    G: nn.Module, seeds: list[int], psi: float = 1.0, w_avg: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-layer styles ``[N, num_ws, w_dim]`` for seeds, truncated towards the W average by psi."""
    ws = ws_from_z(G, z_from_seeds(G, seeds))
    if psi != 1.0:
        avg = w_average(G) if w_avg is None else w_avg
        ws = avg + psi * (ws - avg)
    return ws


def layer_groups(num_ws: int) -> dict[str, range]:
    """Coarse / middle / fine style layers: the first, middle and last third of the synthesis layers."""
    a, b = round(num_ws / 3), round(2 * num_ws / 3)
    a = max(1, a) if num_ws >= 3 else min(1, num_ws)
    return {"coarse": range(0, a), "middle": range(a, max(a, b)), "fine": range(max(a, b), num_ws)}


@torch.no_grad()
def mix(ws_a: torch.Tensor, ws_b: torch.Tensor, layers: range) -> torch.Tensor:
    """Styles of ``ws_a`` with ``layers`` taken from ``ws_b`` (same shape ``[N, num_ws, w_dim]``)."""
    out = ws_a.clone()
    out[:, list(layers)] = ws_b[:, list(layers)]
    return out


@torch.no_grad()
def style_mixing_grid(
    G: nn.Module, row_seeds: list[int], col_seeds: list[int], layers: range
) -> torch.Tensor:
    """The StyleGAN paper's figure: a blank corner, the column sources on top, the row sources on the
    left, and each cell = row seed's styles with ``layers`` from the column seed.
    ``(len(rows) + 1) * (len(cols) + 1)`` images, row-major (tile with nrow = len(cols) + 1)."""
    rows, cols = ws_from_seeds(G, row_seeds), ws_from_seeds(G, col_seeds)
    col_img, row_img = synthesize(G, cols), synthesize(G, rows)
    blank = -torch.ones_like(col_img[:1])
    out = [blank, col_img]
    for i in range(len(row_seeds)):
        mixed = mix(rows[i : i + 1].expand(len(col_seeds), -1, -1), cols, layers)
        out += [row_img[i : i + 1], synthesize(G, mixed)]
    return torch.cat(out).clamp(-1, 1)


@torch.no_grad()
def mix_many(G: nn.Module, seeds: list[int]) -> torch.Tensor:
    """k-latent mixing: the k sources, then one image whose synthesis layers are split evenly among them
    (source i drives the i-th contiguous block of layers). ``k + 1`` images."""
    ws = ws_from_seeds(G, seeds)
    k, n = len(seeds), G.num_ws
    mixed = ws[:1].clone()
    for i in range(k):
        lo, hi = (i * n) // k, ((i + 1) * n) // k
        mixed[:, lo:hi] = ws[i : i + 1, lo:hi]
    return torch.cat([synthesize(G, ws), synthesize(G, mixed)]).clamp(-1, 1)


@torch.no_grad()
def truncation_sweep(G: nn.Module, seeds: list[int], psis: list[float]) -> torch.Tensor:
    """One row per seed, one column per psi (psi 0 = the W-average image). ``len(seeds) * len(psis)``."""
    avg = w_average(G)
    out = [synthesize(G, ws_from_seeds(G, [s], psi, avg)) for s in seeds for psi in psis]
    return torch.cat(out).clamp(-1, 1)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation (for Gaussian Z, where a straight line passes through low-norm points)."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@torch.no_grad()
def interpolate(G: nn.Module, seed_a: int, seed_b: int, steps: int, space: str = "w") -> torch.Tensor:
    """``steps`` images from seed_a to seed_b: slerp in Z (then mapped) or lerp in W."""
    if space not in ("z", "w"):
        raise ValueError(f"space must be 'z' or 'w', got {space!r}")
    ts = [i / max(1, steps - 1) for i in range(steps)]
    if space == "z":
        za, zb = z_from_seeds(G, [seed_a, seed_b])
        z = torch.stack([slerp(za, zb, t) for t in ts])
        return synthesize(G, ws_from_z(G, z)).clamp(-1, 1)
    wa, wb = ws_from_seeds(G, [seed_a, seed_b])
    ws = torch.stack([torch.lerp(wa, wb, t) for t in ts])
    return synthesize(G, ws).clamp(-1, 1)
