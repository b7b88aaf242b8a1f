"""``python -m ganray.train``: train one run in-process, or as a Ray Train trial with --workers."""

from __future__ import annotations

import argparse
import logging
import sys

from ganray.checkpoint import CheckpointError
from ganray.cli_args import int_in
from ganray.config import ConfigError, add_set_argument, load_config
from ganray.data import DataError
from ganray.logs import setup_logging
from ganray.storage import Storage, StorageError
from ganray.train.loop import NonFiniteLossError

log = logging.getLogger("ganray.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ganray.train", description=__doc__)
    p.add_argument("--config", default="quickstart", help="YAML file or preset name (default: quickstart)")
    p.add_argument("--storage", help="where runs go: local path or s3://bucket/prefix (storage.uri)")
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
    except (ConfigError, StorageError) as e:
        sys.exit(f"error: {e}")
    try:
        last = _run(cfg, args)
    except (DataError, CheckpointError, NonFiniteLossError) as e:
        sys.exit(f"error: {e}")
    log.info("done: %s", {k: last[k] for k in ("epoch", "d_loss", "g_loss", "fid") if k in last})


def _run(cfg, args: argparse.Namespace) -> dict:
    """Train in-process, or as a Ray Train trial with --workers; return the last metrics."""
    if args.workers:
        from ganray.train.ray_trial import run_trial

        return run_trial(cfg, address=args.address)
    from ganray.train.loop import Trainer

    history = Trainer(cfg).fit()
    return history[-1] if history else {}
