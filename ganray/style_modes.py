"""``python -m ganray.generate`` modes built on the style tools (ganray.style).

    --mode truncation  --seeds 0-63 --psi 0.7 [--cutoff 8] [--noise-mode const] --out grid.png
    --mode mixing      --seeds 1-4 --cols 10-15 --layers coarse --out mix.png
    --mode mixing-k    --seeds 1,2,3 --layers coarse,middle --out mixk.png   (latent 1 everywhere)
    --mode blend       --seeds 1,2 --frames 9 --out blend.png                (a = 1 .. 0)
    --mode interpolate --seeds 1,2,3 --frames 16 --space w --out walk.gif    (+ walk_frames/)
    --mode activations --seeds 0 --block 2 --out act.png                     (one map per channel)
    --mode filters     --out filters.png                                     (first conv's kernels)

``--layers`` is a named range (coarse 4-8 px, middle 16-32 px, fine 64 px and
up) or indices ``0-3`` / ``0,2,5``; several ranges (mixing-k) are separated by
``,`` between names or ``;`` between index lists. Each mode needs a generator
with a mapping network (stylegan2, stylegan, dcgan-mapping, dcgan-adain, dcgan-demod),
except ``filters``.
"""

from __future__ import annotations

import io
import posixpath
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ganray import style
from ganray.image_io import OutputError, output_kind, parse_seeds
from ganray.storage import Storage, join

MAX_FRAMES = 512


@dataclass
class StyleOptions:
    """Options of the style modes (defaults as NVlabs' generate.py / style_mixing.py)."""

    psi: float | None = None  # None: the generator's default in truncation mode (stylegan 0.7), else 1
    cutoff: int | None = None  # None: the generator's default (stylegan 8), else every style
    noise_mode: str = "const"
    cols: list[int] = field(default_factory=lambda: [10, 11, 12, 13, 14])
    layers: str = "coarse"
    frames: int = 16
    space: str = "w"
    block: int = 0


def parse_layers(G: torch.nn.Module, text: str) -> list[list[int]]:
    """``coarse,middle`` or ``0-3;4,6`` -> one list of style indices per range."""
    groups = text.split(";") if ";" in text or any(c.isdigit() for c in text) else text.split(",")
    out = []
    for g in groups:
        g = g.strip()
        if g in style.RANGES:
            out.append(style.check_range_in_use(G, g))
        else:
            try:
                idx = parse_seeds(g) if g else []
            except OutputError:
                raise OutputError(
                    f"--layers {text!r}: {g!r} is neither coarse/middle/fine nor indices like 0-3 or 0,2,5"
                ) from None
            bad = [i for i in idx if i >= G.num_ws]
            if bad:
                raise OutputError(
                    f"--layers {text!r}: index {bad[0]} >= num_ws ({G.num_ws}) of this generator"
                )
            out.append(idx)
    return out


def _grid(storage: Storage, out: str, images: torch.Tensor, nrow: int | None = None) -> None:
    from ganray.train.artifacts import images_to_png

    if not out.lower().endswith(".png") or output_kind(out, storage) != "grid":
        raise OutputError(f"--out {out}: this mode writes one grid image; end it in .png")
    storage.write_bytes(out, images_to_png(images, nrow))


def _z(G, seeds: list[int]) -> torch.Tensor:
    return style.z_from_seeds(seeds, G.latent_dim, next(G.parameters()).device)


def run_style_mode(
    mode: str, G: torch.nn.Module, seeds: list[int], out: str, opt: StyleOptions, storage: Storage
) -> str:
    """Write the output of style ``mode`` for loaded generator ``G``; return ``out``."""
    if mode == "filters":
        _grid(storage, out, style.to_unit(style.first_layer_filters(G)))
        return out
    if mode == "truncation":  # the generator's defaults (model.stylegan: 0.7 / 8) unless given
        psi, cutoff = style.truncation(G, opt.psi, opt.cutoff)
    else:  # the other modes show untruncated styles unless --psi is given (NVlabs' figures)
        psi, cutoff = style.truncation(G, 1.0 if opt.psi is None else opt.psi, opt.cutoff)
    if mode == "truncation":
        _grid(storage, out, style.images_from_seeds(G, seeds, psi, cutoff, opt.noise_mode))
    elif mode == "mixing":
        layers = parse_layers(G, opt.layers)[0]
        grid = style.mixing_grid(G, _z(G, seeds), _z(G, opt.cols), layers, psi, opt.noise_mode)
        _grid(storage, out, grid, nrow=len(opt.cols) + 1)
    elif mode == "mixing-k":
        ranges = parse_layers(G, opt.layers)
        if len(seeds) != len(ranges) + 1:
            raise OutputError(f"--mode mixing-k: {len(seeds)} seeds need {len(seeds) - 1} --layers ranges")
        imgs = style.mix_k(G, [_z(G, [s]) for s in seeds], ranges, psi, opt.noise_mode)
        sources = style.images_from_seeds(G, seeds, psi, None, opt.noise_mode)
        _grid(storage, out, torch.cat([sources, imgs]), nrow=len(seeds) + 1)
    elif mode == "blend":
        if len(seeds) != 2:
            raise OutputError("--mode blend needs exactly 2 seeds (--seeds A,B)")
        z1, z2 = _z(G, seeds[:1]), _z(G, seeds[1:])
        alphas = np.linspace(1.0, 0.0, _frames(opt))
        _grid(storage, out, torch.cat([style.blend(G, z1, z2, float(a), opt.noise_mode) for a in alphas]))
    elif mode == "interpolate":
        _interpolate(G, seeds, out, opt, psi, storage)
    elif mode == "activations":
        feats = style.activations(G, _z(G, seeds[:1]), opt.block)[0]
        _grid(storage, out, style.to_unit(feats.unsqueeze(1)))
    else:
        raise OutputError(f"unknown style mode {mode!r}")
    return out


def _frames(opt: StyleOptions) -> int:
    if not 2 <= opt.frames <= MAX_FRAMES:
        raise OutputError(f"--frames {opt.frames}: give 2..{MAX_FRAMES}")
    return opt.frames


def _interpolate(G, seeds: list[int], out: str, opt: StyleOptions, psi: float, storage: Storage) -> None:
    """Frames between consecutive seeds as PNGs in ``<out stem>_frames/`` plus an animated GIF at ``out``."""
    from ganray.train.artifacts import tile

    if not out.lower().endswith(".gif"):
        raise OutputError(f"--out {out}: --mode interpolate writes an animated GIF; end it in .gif")
    if len(seeds) < 2:
        raise OutputError("--mode interpolate needs at least 2 seeds (--seeds A,B[,C...])")
    frames = []
    for a, b in zip(seeds[:-1], seeds[1:]):
        walk = style.interpolate(G, _z(G, [a]), _z(G, [b]), _frames(opt), opt.space, psi, opt.noise_mode)
        frames += [tile(f, nrow=1) for f in (walk if not frames else walk[1:])]
    folder = posixpath.splitext(out)[0] + "_frames"
    pics = [Image.fromarray(f[:, :, 0] if f.shape[2] == 1 else f) for f in frames]
    for i, pic in enumerate(pics):
        buf = io.BytesIO()
        pic.save(buf, format="PNG")
        storage.write_bytes(join(folder, f"frame{i:04d}.png"), buf.getvalue())
    buf = io.BytesIO()
    pics[0].save(buf, format="GIF", save_all=True, append_images=pics[1:], duration=80, loop=0)
    storage.write_bytes(out, buf.getvalue())
    print(f"{len(pics)} frames -> {folder}/ and {out}", file=sys.stderr)


STYLE_MODES = ("truncation", "mixing", "mixing-k", "blend", "interpolate", "activations", "filters")


def add_style_arguments(p: Any) -> None:
    """The style modes' options on the generate parser."""
    g = p.add_argument_group("style modes (generators with a mapping network)")
    g.add_argument(
        "--psi",
        type=float,
        default=None,
        help="truncation psi (1 = none, 0 = the average image; default: the model's in truncation mode "
        "(stylegan: model.stylegan.truncation_psi, 0.7), else 1)",
    )
    g.add_argument(
        "--cutoff",
        type=int,
        default=None,
        help="truncate only styles < cutoff (default: the model's, stylegan 8; else all)",
    )
    g.add_argument("--noise-mode", choices=("const", "random", "none"), default="const", help="noise inputs")
    g.add_argument("--cols", type=parse_seeds, default=[10, 11, 12, 13, 14], help="mixing: column seeds")
    g.add_argument(
        "--layers", default="coarse", help="coarse|middle|fine or indices 0-3 (';' between ranges)"
    )
    g.add_argument("--frames", type=int, default=16, help="interpolate/blend: frames per pair")
    g.add_argument("--space", choices=("z", "w"), default="w", help="interpolate: z (slerp) or w (lerp)")
    g.add_argument("--block", type=int, default=0, help="activations: synthesis block (0 = 4 px)")


def options_from_args(args: Any) -> StyleOptions:
    return StyleOptions(
        args.psi, args.cutoff, args.noise_mode, args.cols, args.layers, args.frames, args.space, args.block
    )
