"""Versioned checkpoints: save, load, migrate, latest, best.

A checkpoint is a plain dict of state_dicts plus the config (never a pickled
class), saved with ``torch.save`` under ``RUN/checkpoints/epoch_NNNN.pt`` with a
JSON sidecar ``epoch_NNNN.json`` holding its sha256, epoch and metrics. The
sidecar is written after the checkpoint, so a checkpoint without one (a crash
between the two) is ignored, and a checkpoint whose bytes do not match its
sha256 (corruption) is skipped with a warning in favour of the previous one.
If every checkpoint of a run fails, loading refuses (nothing is overwritten).

Safe to load: checkpoints come from shared storage, and a sha256 sidecar proves
nothing about who wrote them, so they are read with ``torch.load(...,
weights_only=True)``. A checkpoint therefore holds only tensors, numbers,
strings, bools, None and lists/tuples/dicts of them; ``save_checkpoint``
converts numpy values and refuses anything else, naming the key.

Layout (format 2) of the dict the trainer saves:

    epoch, images_seen, history (metric rows), resumed_at, config (plain dict)
    G, D, G_ema (optional), opt_g, opt_d, sched_g/d, scaler_g/d   state_dicts
    rng: {torch, cuda (one state per device), noise, numpy, python}
    extra: GanState.extra, the training state besides weights and optimizers
        that a resume must restore exactly: step counters (ema_step), running
        means (path-length pl_mean, as tensors), the augmentation probability,
        progressive phase and fade-in alpha. Tensors come back on the device.
        A key a newer release adds is missing from older checkpoints: read it
        with ``extra.get(key, default)``.

Evolution: ``FORMAT_VERSION`` is bumped whenever this layout changes, with a
function in ``MIGRATIONS`` that turns format N into N+1; loading applies them
in order, so every older checkpoint still loads. A saved config that lacks a
field is filled with that field's default (ganray.config_compat).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ganray import __version__
from ganray.config_compat import fill_defaults
from ganray.storage import Storage, join

FORMAT_VERSION = 2
CKPT_DIR = "checkpoints"
_NAME = re.compile(r"^epoch_(\d{4,})\.pt$")
_SIDECAR = re.compile(r"^epoch_(\d{4,})\.json$")

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, unsafe, or does not fit the current config."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What the sidecar says about one checkpoint."""

    uri: str
    epoch: int
    sha256: str
    metrics: dict[str, Any]


# ---------------------------------------------------------------- plain values


def numpy_rng_to_plain(state: tuple) -> dict[str, Any]:
    """``np.random.get_state()`` as loadable types (the key array as an int64 tensor)."""
    name, keys, pos, has_gauss, cached = state
    return {
        "bit_generator": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def numpy_rng_from_plain(d: dict[str, Any]) -> tuple:
    """The inverse of ``numpy_rng_to_plain``, for ``np.random.set_state``."""
    keys = np.asarray(d["keys"].numpy() if torch.is_tensor(d["keys"]) else d["keys"], dtype=np.uint32)
    return (d["bit_generator"], keys, d["pos"], d["has_gauss"], d["cached_gaussian"])


def python_rng_to_plain(state: tuple) -> list:
    """``random.getstate()`` as a list: [version, [625 ints], gauss_next]."""
    version, internal, gauss = state
    return [int(version), [int(x) for x in internal], gauss]


def python_rng_from_plain(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


_SCALARS = (bool, int, float, str, type(None))


def to_plain(obj: Any, key: str = "checkpoint") -> Any:
    """``obj`` with numpy values converted; raise CheckpointError naming a key of any other type.

    What comes out loads with ``torch.load(weights_only=True)``.
    """
    if isinstance(obj, np.generic):  # before the scalars: np.float64 is a float subclass
        return obj.item()
    if isinstance(obj, _SCALARS) or torch.is_tensor(obj) or isinstance(obj, (torch.dtype, torch.Size)):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, _SCALARS):
                raise CheckpointError(f"{key} has a key of type {type(k).__name__}; use str or int keys")
            out[k] = to_plain(v, f"{key}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{key}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise CheckpointError(
        f"{key} holds a {type(obj).__module__}.{type(obj).__qualname__}: a checkpoint holds only "
        f"tensors, numbers, strings, bools, None and lists/dicts of them (it is loaded with "
        f"weights_only=True); store its state as tensors or plain values instead"
    )


# ---------------------------------------------------------------- migrations


def _v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
    """Format 1 (ganray 0.1): numpy RNG state as a numpy tuple, no CUDA RNG."""
    rng = dict(state.get("rng", {}))
    if isinstance(rng.get("numpy"), tuple):
        rng["numpy"] = numpy_rng_to_plain(rng["numpy"])
    if isinstance(rng.get("python"), tuple):
        rng["python"] = python_rng_to_plain(rng["python"])
    rng.setdefault("cuda", [])
    return {**state, "rng": rng, "extra": state.get("extra", {}), "resumed_at": state.get("resumed_at", [])}


# Format N -> a function that turns a format-N checkpoint dict into format N+1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def migrate(state: dict[str, Any], uri: str = "checkpoint") -> dict[str, Any]:
    """Bring a loaded checkpoint dict up to ``FORMAT_VERSION`` through ``MIGRATIONS``."""
    version = state.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{uri} is not a ganray checkpoint (no format_version)")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{uri} has format {version}, written by ganray {state.get('ganray_version', '?')}; "
            f"this ganray ({__version__}) reads formats up to {FORMAT_VERSION}: upgrade ganray"
        )
    while version < FORMAT_VERSION:
        state = {**MIGRATIONS[version](state), "format_version": version + 1}
        version += 1
    return state


# ---------------------------------------------------------------- files


def checkpoint_uri(run_uri: str, epoch: int) -> str:
    return join(run_uri, CKPT_DIR, f"epoch_{epoch:04d}.pt")


def save_checkpoint(storage: Storage, run_uri: str, state: dict[str, Any], metrics: dict[str, Any]) -> str:
    """Write ``state`` (must hold 'epoch') atomically; return its URI."""
    epoch = int(state["epoch"])
    payload = to_plain({"format_version": FORMAT_VERSION, "ganray_version": __version__, **state})
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
            sha, metrics = meta["sha256"], meta.get("metrics", {})
            if not isinstance(sha, str) or not isinstance(metrics, dict):
                raise ValueError("sha256 must be a string and metrics a mapping")
        except (ValueError, TypeError, KeyError, FileNotFoundError) as e:
            log.warning("checkpoint sidecar %s is unreadable (%s); ignoring %s", sidecar, e, name)
            continue
        out.append(CheckpointInfo(join(folder, name), int(m.group(1)), sha, metrics))
    return sorted(out, key=lambda c: c.epoch)


def load_checkpoint(storage: Storage, uri: str, sha256: str | None = None) -> dict[str, Any]:
    """Read and verify one checkpoint; raise CheckpointError naming the problem."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {uri} does not exist") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"checkpoint {uri} is corrupt: its sha256 does not match its sidecar")
    state = load_bytes(data, uri)
    return migrate(state, f"checkpoint {uri}")


# numpy's array reconstruction: format-1 checkpoints hold the numpy RNG key array.
# These only rebuild numeric arrays (object arrays need dtype 'O', not allowed).
_LEGACY_GLOBALS = [
    np._core.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
    type(np.dtype(np.float64)),
    type(np.dtype(np.int64)),
    np._core.multiarray.scalar,
]


def load_bytes(data: bytes, uri: str = "checkpoint") -> dict[str, Any]:
    """Unpickle checkpoint bytes with ``weights_only=True``; CheckpointError says why if refused."""
    try:
        with torch.serialization.safe_globals(_LEGACY_GLOBALS):
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
        if reason.startswith("Unsupported operand"):  # not a pickle at all: damaged bytes
            raise CheckpointError(f"checkpoint {uri} cannot be read (damaged: {reason})") from None
        raise CheckpointError(
            f"checkpoint {uri} was refused: it holds objects other than tensors, numbers, strings "
            f"and plain lists/dicts ({reason}). Loading it could run code, so ganray does not; "
            f"it was not written by ganray or was altered. Use a checkpoint from a trusted run"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types on bad bytes
        raise CheckpointError(f"checkpoint {uri} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {uri} is not a ganray checkpoint (not a dict)")
    return state


def load_latest(storage: Storage, run_uri: str) -> dict[str, Any] | None:
    """The newest readable checkpoint of a run, falling back past corrupt ones.

    None if the run has no checkpoint yet. If it has some (sidecars exist) and
    none can be used, raise CheckpointError: starting over would overwrite the
    run's history, so that needs an explicit ``--restart``.
    """
    problems = []
    for info in reversed(list_checkpoints(storage, run_uri)):
        try:
            return load_checkpoint(storage, info.uri, info.sha256)
        except CheckpointError as e:
            log.warning("%s; falling back to the previous checkpoint", e)
            problems.append(str(e))
    claimed = [n for n in storage.listdir(join(run_uri, CKPT_DIR)) if _SIDECAR.match(n)]
    if not claimed:
        return None
    detail = "; ".join(problems) or f"their sidecars ({', '.join(claimed)}) are unreadable"
    raise CheckpointError(
        f"run {run_uri} has {len(claimed)} checkpoint(s) and none can be loaded ({detail}). "
        f"Nothing was changed and every file is kept. Restore a good checkpoint, or start the run "
        f"over with --restart (the old run is moved aside, not deleted)"
    )


def best_checkpoint(
    storage: Storage, run_uri: str, metric: str = "fid", mode: str = "min"
) -> CheckpointInfo | None:
    """The checkpoint with the best value of ``metric`` in its sidecar (None if no value).

    Progressive runs (sidecars with a ``resolution``) pick only among epochs at
    the highest resolution reached: an FID at 8 px is not comparable to one at 32 px.
    """
    scored = [c for c in list_checkpoints(storage, run_uri) if _finite(c.metrics.get(metric))]
    if not scored:
        return None
    top = max((float(c.metrics.get("resolution", 0)) for c in scored), default=0.0)
    scored = [c for c in scored if float(c.metrics.get("resolution", 0)) == top]
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
    """Fail clearly when a checkpoint was written for another architecture.

    A field the checkpoint's config lacks (added by a later release) counts as
    its default: the older release behaved as the default does.
    """
    from ganray.config import Config

    defaults = Config().to_dict()["model"]
    saved = fill_defaults(state.get("config", {}).get("model", {}), defaults)
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
