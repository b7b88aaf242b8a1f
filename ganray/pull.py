"""``python -m ganray.pull``: download a search's best checkpoint (or any trial's) to a local folder.

    python -m ganray.pull s3://bucket/searches/quickstart --dest pulled/
    python -m ganray.pull ./runs/quickstart --dest pulled/ --trial 3a1f2_00002 --epoch 4

Without --trial it reads EXPERIMENT/best.json; with --trial it takes that
trial's checkpoint at --epoch, else its best by FID, else its newest. The
folder gets the checkpoint and its sidecar (sha256 verified), the run's
config.yaml and metrics.jsonl, that epoch's sample grid and pull.json (where
it all came from). Prints the local checkpoint path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import sys
from typing import Any

from ganray import checkpoint as ckpt
from ganray import cli_args
from ganray.storage import Storage, StorageError, check_name, check_uri, is_local, join, relative_to

BEST_FILE = "best.json"
TRIALS_DIR = "trials"


class PullError(RuntimeError):
    """Nothing to pull, or the checkpoint does not match its sidecar."""


def _pick_from_best(storage: Storage, experiment: str) -> tuple[str, str, ckpt.CheckpointInfo]:
    uri = join(experiment, BEST_FILE)
    if not storage.exists(uri):
        raise PullError(
            f"{uri} does not exist: the search has not finished (or this is not an experiment); "
            f"pass --trial ID to pull a trial's checkpoint"
        )
    best = _read_best(storage, uri)
    if not best.get("checkpoint_uri") and not best.get("checkpoint"):
        raise PullError(f"{uri} names no checkpoint for trial {best.get('trial_id')}")
    run_uri = _run_location(best, experiment, uri)
    info = _info_at(storage, run_uri, best["epoch"])
    return best["trial_id"], run_uri, info


def _read_best(storage: Storage, uri: str) -> dict[str, Any]:
    """best.json's content, checked; PullError naming the fix when it is corrupt."""
    fix = "re-run the same `python -m ganray.tune` command to rewrite it, or pull with --trial ID"
    try:
        best = json.loads(storage.read_bytes(uri))
    except ValueError as e:
        raise PullError(f"{uri} is corrupt (not JSON: {e}); {fix}") from None
    ok = (
        isinstance(best, dict)
        and isinstance(best.get("trial_id"), str)
        and isinstance(best.get("epoch"), int)
        and (isinstance(best.get("run"), str) or isinstance(best.get("run_uri"), str))
    )
    if not ok:
        raise PullError(f"{uri} is corrupt (needs trial_id, epoch and run); {fix}")
    return best


def _run_location(best: dict[str, Any], experiment: str, best_uri: str) -> str:
    """The trial's run folder, resolved against ``experiment`` (where the user says it is now).

    best.json written by older ganray versions holds only absolute URIs; those
    below the experiment they name are made relative too.
    """
    rel = best.get("run")
    if rel is None:
        try:
            rel = relative_to(best["run_uri"], str(best.get("experiment", "")))
        except ValueError:
            return best["run_uri"]  # outside its experiment: nothing to resolve against
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):
        raise PullError(f"{best_uri}: run {rel!r} is not a folder below the experiment; the file is corrupt")
    return join(experiment, rel)


def _info_at(storage: Storage, run_uri: str, epoch: int) -> ckpt.CheckpointInfo:
    infos = ckpt.list_checkpoints(storage, run_uri)
    for c in infos:
        if c.epoch == epoch:
            return c
    kept = ", ".join(str(c.epoch) for c in infos) or "none"
    raise PullError(f"{run_uri} has no checkpoint for epoch {epoch}; kept epochs: {kept}")


def _pick_from_trial(storage: Storage, experiment: str, trial: str, epoch: int | None) -> ckpt.CheckpointInfo:
    run_uri = join(experiment, TRIALS_DIR, trial)
    if epoch is not None:
        return _info_at(storage, run_uri, epoch)
    info = ckpt.best_checkpoint(storage, run_uri, "fid", "min")
    infos = ckpt.list_checkpoints(storage, run_uri)
    if info is None and not infos:
        trials = [t for t in storage.listdir(join(experiment, TRIALS_DIR)) if not t.startswith("_")]
        raise PullError(
            f"trial {trial} has no checkpoints at {run_uri}; trials: {', '.join(trials) or 'none'}"
        )
    return info or infos[-1]


def pull(
    experiment: str,
    dest: str,
    trial: str | None = None,
    epoch: int | None = None,
    storage: Storage | None = None,
) -> str:
    """Download one checkpoint (+ sidecar, config, metrics, grid) into ``dest``; return the local .pt path."""
    storage = storage or Storage()
    experiment = experiment.rstrip("/")
    _check_dest(dest)
    if trial is None:
        if epoch is not None:
            raise PullError("--epoch needs --trial")
        trial, run_uri, info = _pick_from_best(storage, experiment)
    else:
        try:
            check_name(trial, "--trial")
        except StorageError as e:
            raise PullError(str(e)) from None
        info = _pick_from_trial(storage, experiment, trial, epoch)
        run_uri = join(experiment, TRIALS_DIR, trial)
    name = posixpath.basename(info.uri)
    others = [f for f in os.listdir(dest) if f.endswith(".pt") and f != name] if os.path.isdir(dest) else []
    if others:
        raise PullError(f"{dest} already holds {', '.join(others)}; pull into an empty folder")
    data = storage.read_bytes(info.uri)
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise PullError(f"{info.uri} does not match the sha256 in its sidecar: the checkpoint is corrupt")
    ckpt.load_bytes(data, info.uri)  # refuse (CheckpointError) what would be unsafe to load later
    os.makedirs(dest, exist_ok=True)
    local = os.path.join(dest, name)
    _write(local, data)
    sidecar = info.uri[: -len(".pt")] + ".json"
    _write(os.path.join(dest, posixpath.basename(sidecar)), storage.read_bytes(sidecar))
    extras = {
        "config.yaml": "config.yaml",
        "metrics.jsonl": "metrics.jsonl",
        f"samples/epoch_{info.epoch:04d}.png": f"grid_epoch_{info.epoch:04d}.png",
    }
    for src, dst in extras.items():
        uri = join(run_uri, src)
        if storage.exists(uri):
            _write(os.path.join(dest, dst), storage.read_bytes(uri))
    meta: dict[str, Any] = {
        "experiment": experiment,
        "trial_id": trial,
        "epoch": info.epoch,
        "checkpoint_uri": info.uri,
        "sha256": info.sha256,
        "metrics": info.metrics,
    }
    _write(os.path.join(dest, "pull.json"), json.dumps(meta, indent=2, default=str).encode())
    return local


def _check_dest(dest: str) -> None:
    """--dest must be a local folder (or a path where one can be made)."""
    if not is_local(dest) or "://" in dest:
        raise PullError(f"--dest {dest}: pull downloads to a local folder; give a local path")
    check_uri(dest)
    parent = os.path.abspath(dest)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        what = "is a file" if parent == os.path.abspath(dest) else f"is below the file {parent}"
        raise PullError(f"--dest {dest} {what}; give a folder to download into")


def _write(path: str, data: bytes) -> None:
    Storage().write_bytes(path, data)  # atomic; orphans of a killed pull are removed next time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ganray.pull",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "experiment", type=cli_args.uri(), help="experiment URI (STORAGE/NAME of python -m ganray.tune)"
    )
    p.add_argument("--dest", required=True, help="local folder to download into")
    p.add_argument("--trial", default=None, help="trial id (default: the best trial from best.json)")
    p.add_argument(
        "--epoch", type=cli_args.int_in(0), default=None, help="with --trial: that epoch's checkpoint"
    )
    p.add_argument("--endpoint-url", default="", help="S3-compatible endpoint (default: AWS_ENDPOINT_URL)")
    p.add_argument("--region", default="", help="S3 region (default: AWS_REGION)")
    args = p.parse_args(argv)
    try:
        local = pull(
            args.experiment, args.dest, args.trial, args.epoch, Storage(args.endpoint_url, args.region)
        )
    except (PullError, StorageError, ckpt.CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(local)
    return 0


if __name__ == "__main__":
    sys.exit(main())
