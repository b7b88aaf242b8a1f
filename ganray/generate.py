"""``python -m ganray.generate``: images from a trained generator, as a grid, a folder or an .npz.

    python -m ganray.generate --checkpoint pulled/ --n 64 --out grid.png
    python -m ganray.generate --checkpoint pulled/ --seeds 0-9999 --out fakes/       # seed0000.png ...
    python -m ganray.generate --checkpoint pulled/ --seeds 0-49999 --out fakes.npz   # uint8 [N, H, W, C]
    python -m ganray.generate --checkpoint s3://bucket/exp/trials/ID/checkpoints/epoch_0004.pt --out grid.jpg

--checkpoint is a checkpoint file (local or any storage URI) or a local folder
holding exactly one (what ``python -m ganray.pull`` writes). The EMA generator
is used when the run kept one (--no-ema for the trained G). Image i comes from
its own seed (``--seeds``, else --seed .. --seed+n-1), so a seed always gives
the same image whatever the batch or output. --out picks the output: .png /
.jpg is one grid (at most 1024 images), .npz one uint8 NHWC array ``arr_0``
(NVlabs/ADM evaluation layout), a folder one PNG per seed (pytorch-fid,
clean-fid). Folders and arrays are written in batches of --batch images, so
memory does not grow with the image count. Exit status: 0 written, 1 bad input.

Style modes (generators with a mapping network; options in ganray/style_modes.py):
    --mode truncation --psi 0.7 --cutoff 8 --noise-mode const   images from seeds, truncated
    --mode mixing --seeds 1-4 --cols 10-15 --layers coarse       style-mixing grid
    --mode mixing-k | blend | interpolate (--space z|w, .gif) | activations --block K | filters
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ganray.checkpoint import CheckpointError
from ganray.cli_args import SEED, int_in, uri
from ganray.config import ConfigError
from ganray.image_io import MAX_SEEDS, WRITERS, OutputError, check_output, output_kind, parse_seeds
from ganray.storage import Storage, StorageError, is_local
from ganray.style_modes import STYLE_MODES, add_style_arguments, options_from_args


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file from a file/URI, or the single *.pt inside a local folder."""
    if is_local(path) and os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".pt"))
        if len(found) != 1:
            what = "no .pt file" if not found else f"{len(found)} .pt files ({', '.join(found)})"
            raise CheckpointError(f"{path} holds {what}; pass the checkpoint file itself")
        return os.path.join(path, found[0])
    return path


@dataclass
class Request:
    """One generate call; a mode (see MODES) turns it into written images."""

    checkpoint: str
    out: str
    seeds: list[int]
    use_ema: bool = True
    batch: int = 256  # images per forward pass and per write (bounds memory)
    style: Any = None  # ganray.style_modes.StyleOptions for the style modes


def run_images(req: Request, storage: Storage) -> str:
    """Mode 'images': one image per seed, to a grid, a folder or an .npz (by --out)."""
    from ganray.inference import load_generator, sample_seeds

    kind = output_kind(req.out, storage)
    check_output(req.out, kind, len(req.seeds), storage)
    G, cfg, which = load_generator(resolve_checkpoint(req.checkpoint), storage, req.use_ema)
    size, stage = cfg.model.resolution, getattr(G, "stage_resolution", cfg.model.resolution)
    if stage != size:  # a checkpoint from mid-growth: upsampled (nearest) like its grids and FID inputs
        from ganray.train.progressive import FullSize

        G = FullSize(G, size)
    shape = (len(req.seeds), size, size, cfg.model.channels)
    n = WRITERS[kind](storage, req.out, sample_seeds(G, req.seeds, req.batch), req.seeds, shape)
    grown = f", generated at {stage}px and upsampled" if stage != size else ""
    print(
        f"{n} images from {which} ({cfg.model.arch}, {size}px{grown}) -> {req.out} ({kind})", file=sys.stderr
    )
    return req.out


def _style_mode(mode: str) -> Callable[[Request, Storage], str]:
    """A generate mode from ganray.style_modes (truncation, mixing, interpolation, ...)."""

    def run(req: Request, storage: Storage) -> str:
        from ganray.inference import load_generator
        from ganray.style_modes import StyleOptions, run_style_mode

        G, cfg, which = load_generator(resolve_checkpoint(req.checkpoint), storage, req.use_ema)
        try:
            out = run_style_mode(mode, G, req.seeds, req.out, req.style or StyleOptions(), storage)
        except ValueError as e:  # a generator without a mapping network, a bad range
            raise OutputError(str(e)) from None
        print(f"{mode} from {which} ({cfg.model.arch}) -> {out}", file=sys.stderr)
        return out

    return run


# Generation modes by name, each with its own options in _parser.
MODES: dict[str, Callable[[Request, Storage], str]] = {"images": run_images}
MODES.update({m: _style_mode(m) for m in STYLE_MODES})


def generate(
    checkpoint: str,
    n: int = 64,
    out: str = "grid.png",
    seed: int = 0,
    use_ema: bool = True,
    storage: Storage | None = None,
    seeds: list[int] | None = None,
    batch: int = 256,
    mode: str = "images",
    style: Any = None,
) -> str:
    """Write images of ``seeds`` (default ``seed .. seed+n-1``) to ``out``; return ``out``.

    ``style`` (ganray.style_modes.StyleOptions) configures the style modes."""
    req = Request(
        checkpoint, out, seeds if seeds is not None else list(range(seed, seed + n)), use_ema, batch, style
    )
    return MODES[mode](req, storage or Storage())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganray.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", type=uri(), required=True, help="checkpoint file or URI, or a folder holding one"
    )
    p.add_argument(
        "--mode", choices=sorted(MODES), default="images", help="what to generate (default images)"
    )
    p.add_argument(
        "--out",
        type=uri(),
        default="grid.png",
        help="FILE.png/.jpg (grid), FILE.npz (uint8 NHWC) or DIR/ (one PNG per seed); local path or URI",
    )
    p.add_argument("--seeds", type=parse_seeds_arg, default=None, help="seeds, e.g. 0-9999 or 1,5,7-9")
    p.add_argument(
        "--n", type=int_in(1, MAX_SEEDS), default=64, help="without --seeds: number of images (default 64)"
    )
    p.add_argument("--seed", type=SEED, default=0, help="without --seeds: the first seed (default 0)")
    p.add_argument("--batch", type=int_in(1, 4096), default=256, help="images per batch (default 256)")
    p.add_argument("--no-ema", dest="use_ema", action="store_false", help="use G, not G_ema")
    p.add_argument("--endpoint-url", default="", help="S3-compatible endpoint for s3:// URIs")
    add_style_arguments(p)
    return p


def parse_seeds_arg(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except OutputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        out = generate(
            args.checkpoint,
            args.n,
            args.out,
            args.seed,
            args.use_ema,
            Storage(args.endpoint_url),
            seeds=args.seeds,
            batch=args.batch,
            mode=args.mode,
            style=options_from_args(args),
        )
    except (CheckpointError, ConfigError, StorageError, OutputError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
