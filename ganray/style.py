"""Style tools for generators with a mapping network (stylegan2, stylegan, dcgan-mapping/-adain/-demod).

A small API the generate CLI and the analysis module call on a loaded G
(``ganray.inference.load_generator``); everything runs under ``no_grad`` in
eval mode and returns images in [-1, 1] as ``[N, C, R, R]`` tensors:

- ``z_from_seeds(seeds, latent_dim)``: one latent per seed (same seed, same z).
- ``w_average(G)``: the tracked ``w_avg`` (stylegan2) or the mean of 10k mapped z.
- ``styles(G, z, psi, cutoff)``: per-layer styles ``[N, num_ws, w_dim]``, truncated.
- ``synthesize(G, ws, noise_mode)``: images from styles.
- ``truncation(G, psi, cutoff)``: psi/cutoff with the generator's defaults for
  None (stylegan: ``model.stylegan.truncation_psi`` / ``truncation_cutoff``, NVlabs'
  0.7 / 8; others: no truncation).
- ``layer_range(G, 'coarse' | 'middle' | 'fine')``: style indices by resolution
  (StyleGAN paper: coarse 4-8 px, middle 16-32 px, fine 64 px and up), only
  styles in use at a growing generator's stage (``check_range_in_use`` refuses
  a range left empty by the stage).
- ``mixing_grid(G, row_z, col_z, layers)``: rows take the column seeds' styles
  at ``layers``; first row/column show the sources (the StyleGAN figure).
- ``mix_k(G, zs, ranges)``: styles of k latents, latent j at ``ranges[j]``.
- ``blend(G, z1, z2, a)``: images of a * w1 + (1 - a) * w2.
- ``interpolate(G, z0, z1, frames, space)``: 'z' slerp or 'w' lerp frames.
- ``activations(G, z, block)`` and ``first_layer_filters(G)``: for grids.

Generators without a mapping network get a clear error naming the archs that have one.
A growing generator (stylegan) works at the stage it was loaded at
(``ganray.inference.generator_from_state``): its images have that stage's size.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from ganray.models.layers import broadcast_ws

Tensor = torch.Tensor
RANGES = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, 1 << 30)}  # pixels, inclusive


def _check_mapping(G: nn.Module) -> None:
    if not (hasattr(G, "mapping") and hasattr(G, "synthesis")):
        raise ValueError(
            f"{type(G).__name__} has no mapping network; style tools need model.arch "
            f"stylegan2, stylegan, dcgan-mapping, dcgan-adain or dcgan-demod"
        )


def _device(G: nn.Module) -> torch.device:
    return next(G.parameters()).device


def z_from_seeds(seeds: list[int], latent_dim: int, device: torch.device | str = "cpu") -> Tensor:
    """``[len(seeds), latent_dim]``: row i is N(0, 1) from ``torch.Generator().manual_seed(seeds[i])``."""
    from ganray.inference import seed_noise  # the one seed -> z rule, shared with generate

    return seed_noise([int(s) for s in seeds], latent_dim).to(device)


@torch.no_grad()
def w_average(G: nn.Module, n: int = 10_000, seed: int = 0) -> Tensor:
    """The W centre for truncation: ``G.w_avg`` when tracked (stylegan2), else the mean of n mapped z."""
    _check_mapping(G)
    w_avg = getattr(G, "w_avg", None)
    if w_avg is not None:
        return w_avg
    z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed)).to(_device(G))
    w = G.mapping(z)
    return (w[:, 0] if w.dim() == 3 else w).mean(0)


@torch.no_grad()
def styles(G: nn.Module, z: Tensor, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
    """Per-layer styles ``[N, num_ws, w_dim]``; layers < ``cutoff`` pulled to w_avg by ``psi``."""
    _check_mapping(G)
    was = G.training
    G.eval()
    ws = broadcast_ws(G.mapping(z.to(_device(G))), G.num_ws).clone()
    G.train(was)
    if psi != 1.0:
        cut = G.num_ws if cutoff is None else cutoff
        ws[:, :cut] = w_average(G).to(ws.dtype).lerp(ws[:, :cut], psi)
    return ws


@torch.no_grad()
def synthesize(G: nn.Module, ws: Tensor, noise_mode: str = "const") -> Tensor:
    """Images from styles; ``noise_mode`` (const / random / none) where the synthesis has noise inputs."""
    was = G.training
    G.eval()
    if "noise_mode" in inspect.signature(G.synthesis.forward).parameters:
        img = G.synthesis(ws, noise_mode=noise_mode)
    else:
        img = G.synthesis(ws)
    G.train(was)
    return img.clamp(-1, 1)


def images_from_seeds(
    G: nn.Module, seeds: list[int], psi: float = 1.0, cutoff: int | None = None, noise_mode: str = "const"
) -> Tensor:
    """One image per seed with truncation ``psi``/``cutoff`` and the given noise mode."""
    return synthesize(G, styles(G, z_from_seeds(seeds, G.latent_dim), psi, cutoff), noise_mode)


def ws_resolutions(G: nn.Module) -> list[int]:
    """The image resolution (pixels) each style index drives.

    StyleGAN2 (``noise_shapes``): style i feeds a conv at 4 * 2^ceil(i/2) px
    (the last one the final toRGB); other mapping generators: style i drives
    layer i at 4 * 2^i px, capped at the output size.
    """
    _check_mapping(G)
    if hasattr(G, "noise_shapes"):
        shapes = list(G.noise_shapes)
        return shapes + [shapes[-1]] * (G.num_ws - len(shapes))
    side = getattr(G.synthesis, "resolution", None) or 1 << 30
    return [min(4 * 2**i, side) for i in range(G.num_ws)]


def truncation(G: nn.Module, psi: float | None = None, cutoff: int | None = None) -> tuple[float, int | None]:
    """(psi, cutoff) with ``G``'s generation defaults where None; ValueError naming a bad value."""
    psi = float(getattr(G, "truncation_psi", 1.0)) if psi is None else float(psi)
    cutoff = getattr(G, "truncation_cutoff", None) if cutoff is None else int(cutoff)
    if not math.isfinite(psi):
        raise ValueError(f"truncation psi {psi} must be a finite number (1 = none, 0 = the average image)")
    num_ws = getattr(G, "num_ws", None)
    if cutoff is not None and num_ws is not None and not 1 <= cutoff <= num_ws:
        raise ValueError(f"truncation cutoff {cutoff}: give 1..{num_ws} (the styles of this generator)")
    return psi, cutoff


def layer_range(G: nn.Module, name: str, in_use: bool = True) -> list[int]:
    """Style indices of the named range: coarse (4-8 px), middle (16-32 px), fine (64 px and up).

    A growing generator (``active_ws``) below full resolution only uses its
    first styles: with ``in_use`` the others are left out.
    """
    if name not in RANGES:
        raise ValueError(f"unknown layer range {name!r}; choose one of: {', '.join(RANGES)}")
    lo, hi = RANGES[name]
    idx = [i for i, r in enumerate(ws_resolutions(G)) if lo <= r <= hi]
    return [i for i in idx if i < getattr(G, "active_ws", G.num_ws)] if in_use else idx


def check_range_in_use(G: nn.Module, name: str) -> list[int]:
    """``layer_range(G, name)``, or a ValueError naming the stage when the range has styles but none in use."""
    used = layer_range(G, name)
    if not used and layer_range(G, name, in_use=False):
        lo, hi = RANGES[name]
        raise ValueError(
            f"layer range {name!r} ({lo}-{min(hi, G.synthesis.resolution)} px) is not in use: this generator "
            f"is at {G.stage_resolution} px (its checkpoint's stage); use coarse or a lower range"
        )
    return used


def mixing_grid(
    G: nn.Module, row_z: Tensor, col_z: Tensor, layers: list[int], psi: float = 1.0, noise_mode: str = "const"
) -> Tensor:
    """``[(R+1)*(C+1), C, H, W]`` row-major: top row the column sources, left column the row sources,
    cell (r, c) the row latent with the column latent's styles at ``layers``; the corner is blank."""
    row_ws, col_ws = styles(G, row_z, psi), styles(G, col_z, psi)
    row_img, col_img = synthesize(G, row_ws, noise_mode), synthesize(G, col_ws, noise_mode)
    cells = [torch.full_like(row_img[:1], -1.0), col_img]
    for r in range(len(row_ws)):
        mixed = row_ws[r : r + 1].repeat(len(col_ws), 1, 1)
        mixed[:, layers] = col_ws[:, layers]
        cells += [row_img[r : r + 1], synthesize(G, mixed, noise_mode)]
    return torch.cat(cells)


def mix_k(
    G: nn.Module, zs: list[Tensor], ranges: list[list[int]], psi: float = 1.0, noise_mode: str = "const"
) -> Tensor:
    """Mix k latents (k = len(zs), 2..8): latent 0 everywhere, then latent j at ``ranges[j - 1]``."""
    if not 2 <= len(zs) <= 8 or len(ranges) != len(zs) - 1:
        raise ValueError(
            f"mix_k needs 2..8 latents and one range per extra latent; got {len(zs)} and {len(ranges)}"
        )
    ws = styles(G, zs[0], psi)
    for z, idx in zip(zs[1:], ranges):
        ws[:, idx] = styles(G, z, psi)[:, idx]
    return synthesize(G, ws, noise_mode)


def blend(G: nn.Module, z1: Tensor, z2: Tensor, a: float, noise_mode: str = "const") -> Tensor:
    """Images of the blended styles a * w1 + (1 - a) * w2."""
    return synthesize(G, torch.lerp(styles(G, z2), styles(G, z1), a), noise_mode)


def slerp_z(z0: Tensor, z1: Tensor, t: float) -> Tensor:
    """Spherical interpolation of latents: direction by slerp, norm by lerp."""
    from ganray.metrics.ppl import slerp

    tt = torch.full((len(z0), 1), float(t), device=z0.device)
    norm = torch.lerp(z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True), tt)
    return slerp(z0, z1, tt) * norm


def interpolate(
    G: nn.Module,
    z0: Tensor,
    z1: Tensor,
    frames: int,
    space: str = "w",
    psi: float = 1.0,
    noise_mode: str = "const",
) -> Tensor:
    """``[frames, N, C, H, W]`` from z0 to z1: 'z' = slerp in Z, 'w' = lerp of styles in W."""
    if space not in ("z", "w"):
        raise ValueError(f"interpolation space {space!r}: choose z (slerp) or w (lerp)")
    if frames < 2:
        raise ValueError(f"interpolation needs at least 2 frames, got {frames}")
    ts = [i / (frames - 1) for i in range(frames)]
    if space == "z":
        return torch.stack([synthesize(G, styles(G, slerp_z(z0, z1, t), psi), noise_mode) for t in ts])
    w0, w1 = styles(G, z0, psi), styles(G, z1, psi)
    return torch.stack([synthesize(G, torch.lerp(w0, w1, t), noise_mode) for t in ts])


@torch.no_grad()
def activations(G: nn.Module, z: Tensor, block: int) -> Tensor:
    """Output features ``[N, C, h, w]`` of synthesis block ``block`` (0 = the lowest resolution)."""
    _check_mapping(G)
    blocks = getattr(G.synthesis, "blocks", None) or getattr(G.synthesis, "convs", None)
    if blocks is None or not 0 <= block < len(blocks):
        n = len(blocks) if blocks is not None else 0
        raise ValueError(f"block {block} out of range: this synthesis network has {n} blocks")
    out: list[Tensor] = []
    hook = blocks[block].register_forward_hook(
        lambda m, i, o: out.append(o[0] if isinstance(o, tuple) else o)
    )
    try:
        synthesize(G, styles(G, z))
    finally:
        hook.remove()
    if not out:  # a growing generator below full resolution does not run its top blocks
        raise ValueError(
            f"block {block} is not in use: this generator is at {G.stage_resolution} px "
            f"(its checkpoint's stage); use a block below {_blocks_in_use(G)}"
        )
    return out[0]


def _blocks_in_use(G: nn.Module) -> int:
    return G.stage_resolution.bit_length() - 2 if hasattr(G, "stage_resolution") else 0


def first_layer_filters(G: nn.Module) -> Tensor:
    """The first synthesis conv's weights as ``[out * in, 1, k, k]`` single-channel tiles."""
    for m in G.synthesis.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 4:
            w = w.detach().reshape(-1, *w.shape[-2:])
            return w.unsqueeze(1)
    raise ValueError("this synthesis network has no conv weights")


def to_unit(x: Tensor) -> Tensor:
    """Min-max scale each map to [-1, 1] so features and filters show as images."""
    flat = x.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-8) * 2 - 1).reshape(x.shape)
