"""``python -m ganray.metrics``: score a checkpoint or an image folder; train an offline backbone.

fid --checkpoint URI [--config ...] [--set metrics.kid=true ...]
fid --images DIR --dataset fashion-mnist [--set ...]
    prints every configured metric as one JSON object.
train-backbone --dataset fashion-mnist [--out URI] [--epochs 4] [--flip]
    trains a feature classifier on the train split, measures it on the test
    split and writes the weights plus a JSON sidecar (sha256, accuracy, command).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ganray.checkpoint import CheckpointError
from ganray.cli_args import SEED, int_in, uri
from ganray.config import (
    Config,
    ConfigError,
    DataConfig,
    MetricsConfig,
    StorageConfig,
    add_set_argument,
    apply_overrides,
    build_config,
    from_dict,
    read_yaml,
)
from ganray.data.dataset import DataError
from ganray.metrics.backbones import BackboneError
from ganray.metrics.sampling import EvaluationError
from ganray.storage import Storage, StorageError, join

log = logging.getLogger("ganray.metrics")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _device(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def device_arg(text: str) -> str:
    """An argparse type: ``cpu``, ``cuda`` or ``cuda:N`` that exists on this machine."""
    try:
        dev = torch.device(text)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device ganray runs on; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"{text}: no CUDA GPU is visible on this machine; use --device cpu"
            )
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(
                f"{text}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}"
            )
    return text


def widths_arg(text: str) -> str:
    """An argparse type: comma-separated positive channel counts, e.g. 32,64,128."""
    parts = text.split(",")
    if not all(p.strip().isdigit() and 0 < int(p) <= 4096 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected channel counts like 32,64,128 (each 1..4096)")
    return text


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


# --------------------------------------------------------------------- fid


_FLAGS = (
    ("dataset", "data.source"),
    ("data_uri", "data.uri"),
    ("backbone", "metrics.backbone"),
    ("inception_weights", "metrics.inception_weights"),
    ("num_samples", "metrics.num_samples"),
    ("batch_size", "metrics.batch_size"),
    ("storage", "storage.uri"),
)


def _overrides(args: argparse.Namespace) -> list[str]:
    """Command-line flags as dotted config overrides; --set entries come last and win."""
    out = [
        f"{key}={getattr(args, flag)}" for flag, key in _FLAGS if getattr(args, flag, None) not in (None, "")
    ]
    out += [f"metrics.{f}=true" for f in ("kid", "pr", "inception_score", "ppl") if getattr(args, f, False)]
    if getattr(args, "command", "") == "fid":
        out.append("metrics.fid=true")  # `metrics fid` scores FID even when the run had it off
    return out + list(args.overrides)


def _config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> Config:
    """A full, validated Config: a checkpoint's config (or --config) plus the flags."""
    data = copy.deepcopy(base) if base is not None else (read_yaml(args.config) if args.config else {})
    return build_config(apply_overrides(data, _overrides(args)))


def _partial_config(args: argparse.Namespace, sections: tuple[str, ...]) -> Config:
    """Only ``sections`` of --config plus the flags (no model to keep consistent with the data)."""
    data = read_yaml(args.config) if args.config else {}
    data = apply_overrides({k: v for k, v in data.items() if k in sections}, _overrides(args))
    kinds = {"data": DataConfig, "metrics": MetricsConfig, "storage": StorageConfig}
    return Config(**{k: from_dict(kinds[k], data.get(k), k) for k in sections})


def _generator_from_checkpoint(
    storage: Storage, uri: str, overrides: argparse.Namespace
) -> tuple[Any, Config]:
    """(G_ema if saved else G, the checkpoint's config with the CLI's overrides)."""
    from ganray import checkpoint as ckpt
    from ganray.inference import sidecar_sha
    from ganray.models import build_models

    state = ckpt.load_checkpoint(storage, uri, sidecar_sha(storage, uri))
    if not isinstance(state.get("config"), dict) or "G" not in state:
        raise ckpt.CheckpointError(f"{uri} is not a ganray training checkpoint: it has no 'config' or 'G'")
    cfg = _config(overrides, base=state["config"])
    G, _ = build_models(cfg.model)
    G.load_state_dict(state["G_ema"] if state.get("G_ema") is not None else state["G"])
    return G, cfg


def image_files(storage: Storage, uri: str) -> list[str]:
    """Sorted URIs of the image files below ``uri`` (local path or fsspec URI)."""
    fs, path = storage.fs(uri)
    found = sorted(p for p in fs.find(path) if p.lower().endswith(IMAGE_EXTS))
    if not found:
        raise FileNotFoundError(f"--images {uri}: no image files ({', '.join(IMAGE_EXTS)}) found")
    proto = uri.split("://", 1)[0] + "://" if "://" in uri else ""
    return [proto + p if proto and not p.startswith(proto) else p for p in found]


def image_batches(
    storage: Storage, files: list[str], data_cfg: DataConfig, batch_size: int
) -> Iterator[torch.Tensor]:
    """Decode files a batch at a time, shaped by the dataset's own geometry (see ganray.data.geometry).

    The reference statistics come from the dataset's images, so outside images
    take the same path (Fashion-MNIST: 28 px padded to 32, never resized); a
    size that is not on that path is a DataError naming the file.
    """
    from PIL import Image

    from ganray.data.geometry import conform, origin_of

    origin = origin_of(data_cfg, storage)
    for start in range(0, len(files), batch_size):
        arrays = []
        for f in files[start : start + batch_size]:
            try:
                with Image.open(io.BytesIO(storage.read_bytes(f))) as im:
                    arrays.append(conform(im, data_cfg, origin))
            except DataError as e:
                raise DataError(f"--images: {f}: {e}") from None
            except OSError:  # PIL's error for undecodable bytes names only its buffer
                raise DataError(f"--images: {f} is not a readable image; delete or replace it") from None
        yield torch.from_numpy(np.stack(arrays)).float().div_(127.5).sub_(1.0)


def cmd_fid(args: argparse.Namespace) -> dict[str, Any]:
    from ganray.metrics.evaluate import evaluate_generator, evaluate_images, finite_or_none

    storage = Storage(args.endpoint_url or "")
    device = _device(args.device)
    if args.checkpoint:
        G, cfg = _generator_from_checkpoint(storage, args.checkpoint, args)
        cache = args.cache or join(cfg.storage.uri, "_cache", "fid-stats")
        out = evaluate_generator(G.to(device), cfg.metrics, cfg.data, storage, cache, device, seed=args.seed)
        out["source"] = args.checkpoint
    else:
        cfg = _partial_config(args, ("data", "metrics", "storage"))
        cache = args.cache or join(cfg.storage.uri, "_cache", "fid-stats")
        files = image_files(storage, args.images)[: cfg.metrics.num_samples]
        if len(files) < 2:  # a covariance needs two images
            raise DataError(f"--images {args.images}: {len(files)} image found; FID needs at least 2")
        batches = image_batches(storage, files, cfg.data, cfg.metrics.batch_size)
        out = evaluate_images(batches, cfg.metrics, cfg.data, storage, cache, device, seed=args.seed)
        out["source"] = args.images
    return {k: finite_or_none(v) for k, v in out.items()}


# ---------------------------------------------------------- train-backbone


def _holdout(ds: Any, fraction: float = 0.1) -> tuple[Any, Any, str]:
    """(train part, evaluation part, label) when a dataset has no test split."""
    from ganray.data import train_val_split

    train, val = train_val_split(ds, fraction, seed=0)
    return train, val, f"holdout {fraction:g} of train"


def cmd_train_backbone(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    from ganray.data import build_dataset
    from ganray.metrics.classifier import (
        ClassifierArch,
        TrainSettings,
        accuracy,
        save_classifier,
        train_classifier,
    )

    t0 = time.perf_counter()
    storage = Storage(args.endpoint_url or "")
    cfg = _partial_config(args, ("data", "storage"))
    data_cfg = cfg.data
    train = build_dataset(data_cfg, "train", storage)
    try:
        test, eval_split = build_dataset(data_cfg, "test", storage), "test"
    except DataError:
        train, test, eval_split = _holdout(train)
    images, labels = train.images_uint8, train.labels
    arch = ClassifierArch(
        train.channels,
        train.resolution,
        int(labels.max()) + 1,
        tuple(int(w) for w in args.widths.split(",")),
        args.feature_dim,
    )
    ts = TrainSettings(
        epochs=args.epochs, batch_size=args.train_batch_size, lr=args.lr, flip=args.flip, seed=args.seed
    )
    net = train_classifier(images, labels, ts, arch, log=lambda m: print(m, file=sys.stderr))
    acc = accuracy(net, test.images_uint8, test.labels)
    name = args.name or f"{data_cfg.source}-classifier"
    out = args.out or join(cfg.storage.uri, "backbones", f"{name}.pt")
    info = {
        "name": name,
        "test_accuracy": round(acc, 4),
        "eval_split": eval_split,
        "eval_images": len(test.labels),
        "train_images": len(labels),
        "train_split": "train",
        "dataset_id": train.dataset_id,
        "eval_dataset_id": test.dataset_id,
        "num_classes": arch.num_classes,
        "resolution": arch.resolution,
        "channels": arch.channels,
        "widths": list(arch.widths),
        "settings": vars(ts),
        "command": "python -m ganray.metrics " + shlex.join(argv),
        "torch": torch.__version__,
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    meta = save_classifier(net, out, storage, info)
    if acc < args.min_accuracy:
        print(
            f"train-backbone: accuracy {acc:.4f} is below --min-accuracy {args.min_accuracy}", file=sys.stderr
        )
    return {"uri": out, **meta}


# -------------------------------------------------------------------- main


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file or preset whose data/metrics sections to use")
    p.add_argument("--dataset", help="data.source: fashion-mnist, cifar10, image-folder, parquet")
    p.add_argument("--data-uri", help="data.uri (path or fsspec URI of the source)")
    p.add_argument("--storage", help="storage.uri (root of runs, reference cache and backbones)")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint")
    add_set_argument(p, "override a config value, e.g. --set data.resolution=64 (repeatable)")
    p.add_argument("--seed", type=SEED, default=0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ganray.metrics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fid", help="score a checkpoint or an image folder; print JSON")
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=uri(), help="ganray checkpoint URI (G_ema is used when saved)")
    src.add_argument("--images", help="folder (path or URI) of generated images")
    _common(f)
    f.add_argument(
        "--backbone", help="metrics.backbone: auto, inception, fashion-mnist-classifier or a .pt URI"
    )
    f.add_argument(
        "--inception-weights", help="metrics.inception_weights (URI of pt_inception-2015-12-05-6726825d.pth)"
    )
    f.add_argument("--num-samples", type=int, help="metrics.num_samples")
    f.add_argument("--batch-size", type=int, help="metrics.batch_size (images per feature batch)")
    for flag, key in (("--kid", "kid"), ("--pr", "pr"), ("--is", "inception_score"), ("--ppl", "ppl")):
        f.add_argument(flag, dest=key, action="store_true", help=f"also compute {key}")
    f.add_argument(
        "--cache", type=uri(), help="reference-statistics folder URI (default: <storage>/_cache/fid-stats)"
    )
    f.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:1 (default: cuda if available)")
    t = sub.add_parser("train-backbone", help="train an offline feature classifier for a labelled dataset")
    _common(t)
    t.add_argument("--out", help="weights URI (.pt); default <storage>/backbones/<source>-classifier.pt")
    t.add_argument("--name", help="backbone name recorded in results (default <source>-classifier)")
    t.add_argument("--epochs", type=int_in(1, 1000), default=4)
    t.add_argument("--train-batch-size", type=int_in(1, 65536), default=128)
    t.add_argument("--lr", type=positive_float, default=3e-3)
    t.add_argument("--flip", action="store_true", help="random horizontal flips (not for digits or text)")
    t.add_argument("--widths", type=widths_arg, default="32,64,128", help="conv channels per stage")
    t.add_argument("--feature-dim", type=int_in(1, 4096), default=128, help="size of the feature layer")
    t.add_argument("--min-accuracy", type=float, default=0.0, help="warn when test accuracy is below this")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("GANRAY_LOG", "WARNING"))
    try:
        out = cmd_fid(args) if args.command == "fid" else cmd_train_backbone(args, argv)
    except (
        ConfigError,
        BackboneError,
        DataError,
        CheckpointError,
        EvaluationError,
        StorageError,
        FileNotFoundError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, default=str))
    return 0
