"""Perceptual path length (Karras et al. 2019), endpoint sampling.

For pairs (z0, z1): in W (generators with a mapping network) images at
lerp(w0, w1, t) and lerp(w0, w1, t + eps) with t = 0 (the path endpoint, the
'end' sampling of StyleGAN); generators without a mapping network use Z with
slerp on the latent directions. The distance between the two images, divided
by eps^2, is averaged after dropping values outside the 1st-99th percentiles.

The distance is LPIPS (VGG) when the ``lpips`` package and its weights are
available locally; otherwise the squared L2 distance of the backbone's
features, labelled ``<backbone>-features`` (not comparable with published PPL).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ganray.metrics.backbones import Backbone
from ganray.metrics.sampling import agreed, eval_mode, gather_rows, isolated_rng, latents, sample_seed, share
from ganray.train.distributed import DistContext, unwrap

EPSILON = 1e-4  # step along the path, in W (or Z-direction) units
VGG_FILE = "vgg16-397923af.pth"  # torchvision's VGG16, which lpips needs


def lpips_distance(device: torch.device) -> nn.Module | None:
    """An LPIPS(VGG) module if lpips and the VGG weights are present offline, else None."""
    try:
        import lpips  # type: ignore[import-not-found]
    except ImportError:
        return None
    if not os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", VGG_FILE)):
        return None  # lpips would download them
    return lpips.LPIPS(net="vgg", verbose=False).to(device).eval()


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of directions; the result has unit norm."""
    a, b = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a * b).sum(-1, keepdim=True).clamp(-1, 1))
    s = torch.sin(omega).clamp_min(1e-12)
    return (torch.sin((1 - t) * omega) / s) * a + (torch.sin(t * omega) / s) * b


def _pair_images(
    G: nn.Module, z0: torch.Tensor, z1: torch.Tensor, noise_seed: int
) -> tuple[torch.Tensor, ...]:
    """Images at t = 0 and t = eps along the path from z0 to z1 (same internal noise for both)."""
    t = torch.zeros(len(z0), 1, device=z0.device)
    if hasattr(G, "mapping") and hasattr(G, "synthesis"):
        w0, w1 = G.mapping(z0), G.mapping(z1)
        tt = t.view(-1, *([1] * (w0.dim() - 1)))
        inputs, fn = (torch.lerp(w0, w1, tt), torch.lerp(w0, w1, tt + EPSILON)), G.synthesis
    else:
        scale = z0.shape[1] ** 0.5  # keep the typical norm of a Gaussian z
        inputs, fn = (slerp(z0, z1, t) * scale, slerp(z0, z1, t + EPSILON) * scale), G
    images = []
    for x in inputs:
        with isolated_rng(noise_seed, z0.device):
            images.append(fn(x).float())
    return tuple(images)


def path_lengths(
    G: nn.Module, backbone: Backbone, indices: range, batch_size: int, device: torch.device, seed: int
) -> tuple[np.ndarray, str]:
    """Per-pair eps^-2-scaled distances for pair ``indices``, and the distance's label."""
    G = unwrap(G)
    lp = lpips_distance(device)
    label = "lpips" if lp is not None else f"{backbone.name}-features"
    out = []
    for start in range(indices.start, indices.stop, batch_size):
        part = range(start, min(start + batch_size, indices.stop))
        z0 = latents(part, G.latent_dim, seed, stream=2).to(device)
        z1 = latents(part, G.latent_dim, seed, stream=3).to(device)
        with eval_mode(G):
            a, b = _pair_images(G, z0, z1, sample_seed(seed, start, stream=4))
            if lp is not None:
                d = lp(a.clamp(-1, 1), b.clamp(-1, 1)).flatten()
            else:
                d = (backbone.features(a) - backbone.features(b)).double().square().sum(1)
        out.append((d.double() / EPSILON**2).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0), label


def summarize(dist: np.ndarray) -> float:
    """Mean of the distances between the 1st and 99th percentiles (StyleGAN's filtering)."""
    lo, hi = np.percentile(dist, 1, method="lower"), np.percentile(dist, 99, method="higher")
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


def perceptual_path_length(
    G: nn.Module,
    backbone: Backbone,
    num_pairs: int,
    batch_size: int,
    device: torch.device,
    seed: int,
    ctx: DistContext | None = None,
) -> dict[str, float | str]:
    """PPL over ``num_pairs`` fixed pairs, split across ranks; every rank gets the same dict."""
    ctx = ctx or DistContext(device=device)
    mine = share(num_pairs, ctx.rank, ctx.world_size)
    d, label = agreed(ctx, lambda: path_lengths(G, backbone, mine, batch_size, device, seed), "PPL")
    d = gather_rows(ctx, d, num_pairs)
    space = "w" if hasattr(unwrap(G), "mapping") else "z"
    return {"ppl": summarize(d), "ppl_distance": label, "ppl_space": space, "ppl_num_pairs": num_pairs}
