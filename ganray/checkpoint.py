"""Versioned checkpoints: save, load, latest, best.

A checkpoint is a plain dict of state_dicts plus the config (never a pickled
class), saved with ``torch.save`` under ``RUN/checkpoints/epoch_NNNN.pt`` with a
JSON sidecar ``epoch_NNNN.json`` holding its sha256, epoch and metrics. The
sidecar is written after the checkpoint, so a checkpoint without one (a crash
between the two) is ignored, and a checkpoint whose bytes do not match its
sha256 (corruption) is skipped with a warning in favour of the previous one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import torch

from ganray import __version__
from ganray.storage import Storage, join

FORMAT_VERSION = 1
CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^epoch_(\d{4,})\.pt$")

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the current config."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What the sidecar says about one checkpoint."""

    uri: str
    epoch: int
    sha256: str
    metrics: dict[str, Any]


def checkpoint_uri(run_uri: str, epoch: int) -> str:
    return join(run_uri, CKPT_DIR, f"epoch_{epoch:04d}.pt")


def save_checkpoint(storage: Storage, run_uri: str, state: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Write ``state`` (must hold 'epoch') atomically; return its URI."""
    epoch = int(state["epoch"])
    payload = {"format_version": FORMAT_VERSION, "ganray_version": __version__, **state}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    uri = checkpoint_uri(run_uri, epoch)
    storage.write_bytes(uri, data)
    meta = {
        "epoch": epoch,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "metrics": metrics,
    }
    storage.write_text(uri[: -len(".pt")] + ".json", json.dumps(meta, default=float))
    return uri


def list_checkpoints(storage: Storage, run_uri: str) -> list[CheckpointInfo]:
    """Checkpoints that have a sidecar, oldest first."""
    folder = join(run_uri, CKPT_DIR)
    names = storage.listdir(folder)
    out = []
    for name in names:
        m = _NAME.match(name)
        sidecar = name[: -len(".pt")] + ".json"
        if not m or sidecar not in names:
            continue
        try:
            meta = json.loads(storage.read_text(join(folder, sidecar)))
        except (ValueError, FileNotFoundError):
            log.warning("checkpoint sidecar %s is unreadable; ignoring %s", sidecar, name)
            continue
        out.append(
            CheckpointInfo(join(folder, name), int(m.group(1)), meta["sha256"], meta.get("metrics", {}))
        )
    return sorted(out, key=lambda c: c.epoch)


def load_checkpoint(storage: Storage, uri: str, sha256: str | None = None) -> dict[str, Any]:
    """Read and verify one checkpoint; raise CheckpointError naming the problem."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {uri} does not exist") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"checkpoint {uri} is corrupt: its sha256 does not match its sidecar")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch raises many types on bad bytes
        raise CheckpointError(f"checkpoint {uri} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {uri} has format {state.get('format_version') if isinstance(state, dict) else '?'}, "
            f"this ganray reads format {FORMAT_VERSION}"
        )
    return state


def load_latest(storage: Storage, run_uri: str) -> dict[str, Any] | None:
    """The newest readable checkpoint of a run, falling back past corrupt ones; None if none."""
    for info in reversed(list_checkpoints(storage, run_uri)):
        try:
            return load_checkpoint(storage, info.uri, info.sha256)
        except CheckpointError as e:
            log.warning("%s; falling back to the previous checkpoint", e)
    return None


def best_checkpoint(
    storage: Storage, run_uri: str, metric: str = "fid", mode: str = "min"
) -> CheckpointInfo | None:
    """The checkpoint with the best value of ``metric`` in its sidecar (None if no value)."""
    scored = [c for c in list_checkpoints(storage, run_uri) if _finite(c.metrics.get(metric))]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda c: float(c.metrics[metric]))


def prune_checkpoints(storage: Storage, run_uri: str, keep: int, metric: str = "fid") -> None:
    """Delete all but the ``keep`` newest checkpoints and the best one by ``metric``."""
    infos = list_checkpoints(storage, run_uri)
    best = best_checkpoint(storage, run_uri, metric)
    keep_uris = {c.uri for c in infos[-keep:]} | ({best.uri} if best else set())
    for c in infos:
        if c.uri not in keep_uris:
            # Sidecar first: a checkpoint without a sidecar is already invisible.
            storage.remove(c.uri[: -len(".pt")] + ".json")
            storage.remove(c.uri)


def check_compatible(state: dict[str, Any], model_cfg: dict[str, Any]) -> None:
    """Fail clearly when a checkpoint was written for another architecture."""
    saved = state.get("config", {}).get("model", {})
    diff = {k: (saved.get(k), v) for k, v in model_cfg.items() if saved.get(k) != v}
    if diff:
        items = ", ".join(
            f"model.{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in sorted(diff.items())
        )
        raise CheckpointError(
            f"checkpoint was written by a different architecture ({items}); "
            f"use the checkpoint's config or start a new run (another storage.run_name)"
        )


def _finite(x: Any) -> bool:
    try:
        return x is not None and float(x) == float(x) and abs(float(x)) != float("inf")
    except (TypeError, ValueError):
        return False
