"""One trial = one Ray Train run of the same loop, on DDP workers.

The worker function wraps ``Trainer`` (ganray.train.loop): G and D are each
passed through ``ray.train.torch.prepare_model`` (DDP with
``forward_sync_buffers=False``: BatchNorm running stats are updated in several
forwards per step, and an in-place buffer broadcast between them would break
autograd; each rank keeps its own running stats, rank 0's are checkpointed), rank 0 writes every
artifact through the storage layer, and every rank reports once per epoch.
Rank 0 registers each checkpoint with Ray as a small directory holding a
pointer to the checkpoint on ganray's storage, so the bytes exist once.

Fault tolerance: ``FailureConfig(max_failures)`` restarts the worker group, and
``Trainer`` resumes from the run's newest good checkpoint on ganray storage,
which holds the metrics history, so no epoch is counted twice or lost.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

from ganray.config import Config, build_config
from ganray.storage import Storage, is_local, join

log = logging.getLogger("ganray.train")

POINTER_FILE = "ganray_checkpoint.json"
RAY_DIR = "_ray"  # Ray Train's own run state lives beside, not inside, ganray's runs


def _report_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """Ray reports take numbers and strings; None (e.g. no FID this epoch) is dropped."""
    return {k: v for k, v in row.items() if v is not None}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker entry: build the Trainer for this rank and fit."""
    import ray.train
    import ray.train.torch

    from ganray.logs import setup_logging
    from ganray.train.distributed import DistContext
    from ganray.train.loop import NonFiniteLossError, Trainer

    setup_logging()
    quiet_train_reports()
    cfg = build_config(loop_config["config"])
    ctx = DistContext.from_process_group(device=ray.train.torch.get_device())

    def wrap(module):
        # Weights and buffers are synced once at wrap time; not before every forward.
        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"forward_sync_buffers": False})

    def report(row: dict[str, Any], ckpt_uri: str | None) -> None:
        metrics = _report_metrics(row)
        if ckpt_uri is None:
            ray.train.report(metrics)
            return
        metrics["checkpoint_uri"] = ckpt_uri
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, POINTER_FILE), "w") as fh:
                json.dump({"uri": ckpt_uri, "epoch": row["epoch"]}, fh)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    try:
        Trainer(cfg, ctx, wrap=wrap, on_epoch_end=report, lease_owner=loop_config["lease_owner"]).fit()
    except NonFiniteLossError:
        # Deterministic: a restart would hit the same NaN, so end the workers
        # cleanly; raise_if_failed() turns error.json into the trial's error.
        return


def quiet_train_reports() -> None:
    """Silence Ray Train V2's per-report INFO line in this worker ("Reporting training
    result N: TrainingReport(...)", the whole metrics dict, from every rank each epoch).

    Ray logs it through a logger named after its source file (not under ``ray.train``),
    so neither RunConfig's LoggingConfig nor the ``ray.train`` logger level reach it;
    its warnings and errors still show. ganray logs one line per trial-epoch instead."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def raise_if_failed(cfg: Config) -> None:
    """Raise the error a run recorded in error.json (e.g. a NaN loss), if any."""
    from ganray.train.loop import ERROR_FILE, NonFiniteLossError, run_uri_for

    storage = Storage.from_config(cfg.storage)
    uri = join(run_uri_for(cfg), ERROR_FILE)
    if storage.exists(uri):
        raise NonFiniteLossError(json.loads(storage.read_text(uri))["message"])


def wants_gpu(cfg: Config) -> bool:
    """'auto' uses GPUs when the connected cluster has any."""
    import ray

    if cfg.train.use_gpu == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return cfg.train.use_gpu == "yes"


def ray_storage(cfg: Config) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray's RunConfig from ganray's storage settings."""
    root = join(cfg.storage.uri, RAY_DIR)
    if is_local(root):
        return os.path.abspath(root), None
    fs, path = Storage.from_config(cfg.storage).arrow_fs(root)
    return path, fs


# Ray Train retries a run whose worker group could not start (60 s each,
# RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S) without limit by default, so a trial
# whose CPUs/GPUs never free up (or never appear) would wait for ever and its
# search with it. 15 tries give an autoscaler ~15 min to add a node; then the
# trial fails with Ray's reason and the search goes on.
CONTROLLER_RETRIES = 15


def build_trainer(cfg: Config, callbacks: list | None = None, lease_owner: str | None = None):
    """The TorchTrainer for one trial (used by the CLI and by each Tune trial).

    ``lease_owner`` names this run attempt in the run's lease (ganray.train.lease):
    every restart of its worker group shares it, so a restarted rank 0 takes back
    its own lease. A Tune trial passes its trial id (stable across trial restarts).
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ganray.train.distributed import compute_plan
    from ganray.train.lease import new_owner
    from ganray.train.loop import run_name_for

    plan = compute_plan(cfg.train, gpu=wants_gpu(cfg))
    resources = {"CPU": cfg.train.cpus_per_worker}
    if plan.use_gpu:
        resources["GPU"] = 1
    storage_path, storage_fs = ray_storage(cfg)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "lease_owner": lease_owner or new_owner()},
        torch_config=TorchConfig(backend=plan.backend),
        scaling_config=ScalingConfig(
            num_workers=cfg.train.workers, use_gpu=plan.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name_for(cfg),
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(
                max_failures=cfg.train.max_failures, controller_failure_limit=CONTROLLER_RETRIES
            ),
            callbacks=callbacks or [],
        ),
    )


# Ray Train settings for a Ray that ganray starts on this machine (a user's own
# environment wins; a cluster keeps its own). Each trial launches a Train
# controller and its workers, so per-trial fixed costs add up over a search:
LOCAL_RAY_ENV = {
    # One machine has no spot preemption to watch; the watcher costs an actor
    # process (~1-2 s of start-up) per trial.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # The controller polls its workers every 2 s by default, which a trial pays
    # at start and at its end. Measured here (2-worker trials): 0.5 s saves 2-4 s
    # of wall time a trial for ~1% of img/s (within noise; ~4% of a core polling).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}


def connect(address: str | None = None) -> None:
    """Join a running Ray cluster (address, RAY_ADDRESS or 'auto'), else start a local one.

    ``address='local'`` always starts a new local Ray, even when a cluster is
    running or RAY_ADDRESS names one. An explicit address that does not accept
    connections raises ConnectionError at once, naming it (Ray itself retries for
    minutes)."""
    import ray

    if ray.is_initialized():
        return
    if address == "local":
        start_local_ray(address="local")
        return
    target = check_address(address)
    try:
        ray.init(address=target, log_to_driver=True)
        return
    except ConnectionError:
        if target != "auto":
            raise
        log.info("no Ray cluster reachable; starting a local one")
    start_local_ray()


def check_address(address: str | None) -> str:
    """The address ``connect`` will use ('local', 'auto', or a concrete one from ``address``
    or RAY_ADDRESS); a concrete one must accept connections (ConnectionError otherwise)."""
    if address is not None and not address.strip():
        raise ConnectionError("--address is empty: give the head's host:port, 'auto' or 'local'")
    if address == "local":
        return address
    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    if target != "auto":
        check_reachable(target, "--address" if address else "RAY_ADDRESS")
    return target


def check_reachable(address: str, source: str = "--address", timeout: float = 10.0) -> None:
    """Raise ConnectionError naming ``address`` (host:port or ray://host:port, taken from
    ``source``) unless something accepts TCP connections there within ``timeout`` seconds."""
    import socket

    where = address.removeprefix("ray://")
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in where:
        raise ConnectionError(
            f"Ray address {address!r} ({source}) is not host:port (e.g. 10.0.0.5:6379, the head's "
            f"GCS port, or ray://HOST:10001); use --address local for a new local Ray"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address} ({source}): {e.strerror or e}; check the "
            f"address (the head's host:port, default port 6379) and that `ray start --head` runs there"
        ) from None


def start_local_ray(**init_kwargs: Any) -> None:
    """Start a Ray on this machine with LOCAL_RAY_ENV: its processes inherit this
    process's environment, the only way to reach the Train controller's settings.

    Its processes are also told their own dashboard's address
    (``RAY_API_SERVER_ADDRESS``): Ray Train's placement-group cleaner, which frees
    the CPUs of a trial that Tune stopped early (ASHA), finds the State API by
    auto-detection, which fails when a second Ray runs on the machine ("Found
    multiple active Ray instances"); the stopped trial's CPUs then stay reserved
    and the next trial waits for them for ever."""
    import ray

    for k, v in LOCAL_RAY_ENV.items():
        os.environ.setdefault(k, v)
    kwargs = {"log_to_driver": True, **init_kwargs}
    if kwargs.get("include_dashboard") is False:
        ray.init(**kwargs)  # no State API at all: an early-stopped trial's CPUs are not freed
        return
    kwargs.setdefault("dashboard_host", "127.0.0.1")
    kwargs.setdefault("dashboard_port", free_port(kwargs["dashboard_host"]))
    url = f"http://{kwargs['dashboard_host']}:{kwargs['dashboard_port']}"
    # Only Ray's own processes (started inside ray.init) keep the setting: left
    # in this process, it would point a later Ray at this one's dashboard.
    before = os.environ.get(API_SERVER_ENV)
    os.environ[API_SERVER_ENV] = url
    try:
        ray.init(**kwargs)
    finally:
        if before is None:
            os.environ.pop(API_SERVER_ENV, None)
        else:
            os.environ[API_SERVER_ENV] = before


API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # read by Ray's State API client before RAY_ADDRESS


def free_port(host: str) -> int:
    """A TCP port nothing listens on now (the OS picks it; a tiny race remains until it is used)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_trial(cfg: Config, address: str | None = None) -> dict[str, Any]:
    """Run one trial on the Ray cluster; return its last reported metrics."""
    from ganray.train.lease import Lease, new_owner
    from ganray.train.loop import run_uri_for

    storage = Storage.from_config(cfg.storage)
    storage.check_writable(cfg.storage.uri)
    owner = new_owner()
    Lease(storage, run_uri_for(cfg), owner).check_free()  # fail before starting any worker
    connect(address)
    result = build_trainer(cfg, lease_owner=owner).fit()
    if result.error:
        raise result.error
    raise_if_failed(cfg)
    log.info("trial finished: %s", run_uri_for(cfg))
    return dict(result.metrics or {})
