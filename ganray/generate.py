"""``python -m ganray.generate``: images from a trained generator, as one PNG grid.

    python -m ganray.generate --checkpoint pulled/ --n 64 --out grid.png
    python -m ganray.generate --checkpoint s3://bucket/exp/trials/ID/checkpoints/epoch_0004.pt --out grid.png

--checkpoint is a checkpoint file (local or any storage URI) or a local folder
holding exactly one (what ``python -m ganray.pull`` writes). The EMA generator
is used when the run kept one (--no-ema for the trained G).
"""

from __future__ import annotations

import argparse
import os
import sys

from ganray.checkpoint import CheckpointError
from ganray.config import ConfigError
from ganray.storage import Storage, StorageError, is_local


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file from a file/URI, or the single *.pt inside a local folder."""
    if is_local(path) and os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".pt"))
        if len(found) != 1:
            what = "no .pt file" if not found else f"{len(found)} .pt files ({', '.join(found)})"
            raise CheckpointError(f"{path} holds {what}; pass the checkpoint file itself")
        return os.path.join(path, found[0])
    return path


def generate(
    checkpoint: str, n: int, out: str, seed: int = 0, use_ema: bool = True, storage: Storage | None = None
) -> str:
    """Write a grid of ``n`` samples to ``out`` (local path or URI); return ``out``."""
    from ganray.inference import load_generator, sample
    from ganray.train.artifacts import images_to_png

    storage = storage or Storage()
    G, cfg, which = load_generator(resolve_checkpoint(checkpoint), storage, use_ema)
    images = sample(G, n, seed)
    storage.write_bytes(out, images_to_png(images))
    print(f"{n} images from {which} ({cfg.model.arch}, {cfg.model.resolution}px) -> {out}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ganray.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint file or URI, or a folder holding one")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", default="grid.png", help="PNG to write: local path or URI (default grid.png)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--no-ema", dest="use_ema", action="store_false", help="use G, not G_ema")
    p.add_argument("--endpoint-url", default="", help="S3-compatible endpoint for s3:// URIs")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be >= 1")
    try:
        print(
            generate(args.checkpoint, args.n, args.out, args.seed, args.use_ema, Storage(args.endpoint_url))
        )
    except (CheckpointError, ConfigError, StorageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
