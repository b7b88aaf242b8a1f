"""``python -m ganray.train``: train one run in-process, or as a Ray Train trial with --workers."""

from __future__ import annotations

import argparse
import copy
import logging
import sys

import yaml

from ganray.checkpoint import CheckpointError
from ganray.cli_args import int_in, uri
from ganray.config import Config, ConfigError, add_set_argument, load_config
from ganray.data import DataError
from ganray.logs import setup_logging
from ganray.metrics.backbone_types import BackboneError
from ganray.storage import Storage, StorageError, join
from ganray.train.loop import NonFiniteLossError

log = logging.getLogger("ganray.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ganray.train", description=__doc__)
    p.add_argument("--config", default="quickstart", help="YAML file or preset name (default: quickstart)")
    p.add_argument(
        "--storage", type=uri(), help="where runs go: local path or s3://bucket/prefix (storage.uri)"
    )
    p.add_argument("--run-name", help="run folder under --storage (default: derived from the config)")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (storage.endpoint_url)")
    add_set_argument(p, "override a config value, e.g. --set train.epochs=2 (repeatable)")
    p.add_argument(
        "--workers",
        type=int_in(1, why=" (omit --workers to train in-process, without Ray)"),
        help="run as a Ray Train trial with N >= 1 DDP workers (without it: in-process, no Ray)",
    )
    p.add_argument("--gpu", action="store_true", help="with --workers: one GPU per worker")
    p.add_argument("--address", default=None, help="Ray cluster address (default: auto, else start local)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace):
    overrides = list(args.overrides)
    if args.storage:
        overrides.append(f"storage.uri={args.storage}")
    if args.run_name:
        overrides.append(f"storage.run_name={args.run_name}")
    if args.endpoint_url:
        overrides.append(f"storage.endpoint_url={args.endpoint_url}")
    if args.workers:
        overrides.append(f"train.workers={args.workers}")
    if args.gpu:
        overrides.append("train.use_gpu=yes")
    return load_config(args.config, overrides)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        Storage.from_config(cfg.storage).check_writable(cfg.storage.uri)
        cfg = pin_backbone(cfg)
    except (ConfigError, StorageError, DataError, BackboneError) as e:
        sys.exit(f"error: {e}")
    try:
        last = _run(cfg, args)
    except (DataError, CheckpointError, NonFiniteLossError, BackboneError) as e:
        sys.exit(f"error: {e}")
    log.info("done: %s", {k: last[k] for k in ("epoch", "d_loss", "g_loss", "fid") if k in last})


def pin_backbone(cfg: Config) -> Config:
    """Resolve ``metrics.backbone: auto`` once, here, and write the concrete name into the config.

    Every epoch (and, with --workers, every worker and restart) is then scored by
    the same network. A resumed run keeps the backbone its config.yaml recorded.
    The run folder is named before pinning, so the same command keeps resuming it.
    """
    from ganray.metrics.backbones import resolve_backbone_name
    from ganray.train.loop import run_name_for, run_uri_for

    if not cfg.metrics.fid or cfg.metrics.backbone != "auto":
        return cfg
    storage = Storage.from_config(cfg.storage)
    cfg = copy.deepcopy(cfg)
    cfg.storage.run_name = run_name_for(cfg)
    stored = join(run_uri_for(cfg), "config.yaml")
    name = _stored_backbone(storage, stored)
    cfg.metrics.backbone = name if name != "auto" else resolve_backbone_name(cfg.metrics, cfg.data, storage)
    log.info("FID backbone: %s", cfg.metrics.backbone)
    return cfg


def _stored_backbone(storage: Storage, config_uri: str) -> str:
    """metrics.backbone of a run's config.yaml; 'auto' when there is none (or it is unreadable)."""
    try:
        before = yaml.safe_load(storage.read_text(config_uri)) if storage.exists(config_uri) else None
        return str(before["metrics"]["backbone"]) or "auto"
    except (yaml.YAMLError, TypeError, KeyError, UnicodeDecodeError):
        return "auto"


def _run(cfg: Config, args: argparse.Namespace) -> dict:
    """Train in-process, or as a Ray Train trial with --workers; return the last metrics."""
    if args.workers:
        from ganray.train.ray_trial import run_trial

        return run_trial(cfg, address=args.address)
    from ganray.train.loop import Trainer

    history = Trainer(cfg).fit()
    return history[-1] if history else {}
