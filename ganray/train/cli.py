"""``python -m ganray.train``: train one run in-process, or as a Ray Train trial with --workers.

Exit codes: 0 trained (or already done); 1 error (config, data, checkpoint,
storage, lease: the message says why and what to do, and the run stays
resumable); 2 unknown or malformed option; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import copy
import errno
import logging
import os
import sys
import time

import yaml

from ganray import checkpoint as ckpt
from ganray.checkpoint import CheckpointError
from ganray.cli_args import int_in, uri
from ganray.config import Config, ConfigError, add_set_argument, load_config
from ganray.data import DataError
from ganray.logs import setup_logging
from ganray.metrics.backbone_types import BackboneError
from ganray.storage import Storage, StorageError, is_local, join
from ganray.train.lease import Lease, LeaseError
from ganray.train.loop import NonFiniteLossError, run_name_for, run_uri_for

RESTARTED_DIR = "_restarted"  # STORAGE/_restarted/RUN-TIMESTAMP: runs set aside by --restart

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
    p.add_argument(
        "--restart",
        action="store_true",
        help=f"start the run over: its folder is moved to STORAGE/{RESTARTED_DIR}/RUN-TIMESTAMP (kept)",
    )
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
        cfg = pin_backbone(cfg, keep_stored=not args.restart)
    except (ConfigError, StorageError, DataError, BackboneError) as e:
        sys.exit(f"error: {e}")
    try:
        if args.restart:
            restart_run(cfg)
        last = _run(cfg, args)
    except (DataError, CheckpointError, NonFiniteLossError, BackboneError, LeaseError, StorageError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print(f"interrupted: {_resume_hint(cfg)}", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        sys.exit(
            f"error: no space left on the device holding {e.filename or cfg.storage.uri}. "
            f"Free space there (or pick another --storage) and re-run the same command: {_resume_hint(cfg)}"
        )
    log.info("done: %s", {k: last[k] for k in ("epoch", "d_loss", "g_loss", "fid") if k in last})


def pin_backbone(cfg: Config, keep_stored: bool = True) -> Config:
    """Resolve ``metrics.backbone`` once, here, and write the pinned name into the config.

    The name carries the weights' hash (``inception@3f1c2a9b0d1e``), so every
    epoch, and with --workers every worker and restart, is scored by the same
    network and weights, or fails saying why. A resumed run keeps the backbone its
    config.yaml recorded (``keep_stored``; not on --restart). The run folder is
    named before pinning, so the same command keeps resuming it.
    """
    from ganray.metrics.backbones import pin_backbone as pin

    if not cfg.metrics.fid:
        return cfg
    storage = Storage.from_config(cfg.storage)
    cfg = copy.deepcopy(cfg)
    cfg.storage.run_name = run_name_for(cfg)
    stored = _stored_backbone(storage, join(run_uri_for(cfg), "config.yaml")) if keep_stored else "auto"
    if stored != "auto":
        cfg.metrics.backbone = stored
    cfg.metrics.backbone, _ = pin(cfg.metrics, cfg.data, storage)
    log.info("FID backbone: %s", cfg.metrics.backbone)
    return cfg


def _stored_backbone(storage: Storage, config_uri: str) -> str:
    """metrics.backbone of a run's config.yaml; 'auto' when there is none (or it is unreadable)."""
    try:
        before = yaml.safe_load(storage.read_text(config_uri)) if storage.exists(config_uri) else None
        return str(before["metrics"]["backbone"]) or "auto"
    except (yaml.YAMLError, TypeError, KeyError, UnicodeDecodeError):
        return "auto"


def _resume_hint(cfg: Config) -> str:
    """Where a re-run of the same command continues (from the newest checkpoint's sidecars)."""
    try:
        infos = ckpt.list_checkpoints(Storage.from_config(cfg.storage), run_uri_for(cfg))
    except Exception:  # noqa: BLE001 - only a hint; the run itself is untouched
        infos = []
    if not infos:
        return "re-running the same command starts the run at epoch 1 (no checkpoint yet)"
    return (
        f"the run resumes from epoch {infos[-1].epoch + 1} (checkpoint of epoch {infos[-1].epoch}) "
        f"when the same command is run again"
    )


def restart_run(cfg: Config) -> str | None:
    """Move the run's folder aside (never delete it); return where it went (None if no run)."""
    storage = Storage.from_config(cfg.storage)
    run_uri = run_uri_for(cfg)
    Lease(storage, run_uri, owner="restart").check_free()  # never move a live run
    fs, path = storage.fs(run_uri)
    if not fs.exists(path):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = join(cfg.storage.uri, RESTARTED_DIR, f"{run_name_for(cfg).replace('/', '_')}-{stamp}")
    _, dest_path = storage.fs(dest)
    if is_local(run_uri):
        os.makedirs(os.path.dirname(dest_path), exist_ok=True)
        os.rename(path, dest_path)  # atomic on one filesystem
    else:  # object stores: copy every object, then delete the originals
        files = fs.find(path)
        for f in files:
            fs.copy(f, dest_path + f[len(path) :])
        fs.rm(files)
    log.warning("--restart: moved the old run %s to %s (nothing deleted)", run_uri, dest)
    return dest


def _run(cfg: Config, args: argparse.Namespace) -> dict:
    """Train in-process, or as a Ray Train trial with --workers; return the last metrics."""
    if args.workers:
        from ganray.train.ray_trial import run_trial

        return run_trial(cfg, address=args.address)
    from ganray.train.loop import Trainer

    history = Trainer(cfg).fit()
    return history[-1] if history else {}
