"""The search driver: Ray Tune + Optuna (TPE) + ASHA over Ray Train trials.

Experiment layout (EXPERIMENT = STORAGE/NAME, a local path or s3://bucket/prefix/NAME)::

    EXPERIMENT/
      space.yaml            the resolved space (base config expanded, --set applied)
      search_lease.json     while a search runs: its owner and heartbeat (one search per experiment)
      _tune/                Ray Tune's experiment state (Tuner.restore reads it)
      trials/TRIAL_ID/      one ganray run per trial (see ganray.train.artifacts)
      trials/_ray/TRIAL_ID  Ray Train's run state for that trial
      trials/_cache/        FID reference statistics shared by the trials
      best.json             the best trial, its config, best metric and checkpoint URI
      results.parquet       every epoch of every trial, with its params and status

Each Tune trial is ``ganray.tune.trial.run_trial``, holding ~0 CPU. The
objective Tune, Optuna and ASHA see is ``best_<metric>``: the trial's running
best of the metric over its evaluation epochs (NaN before the first one).
OptunaSearch tells the study the *last* result of a trial, so reporting the
running best makes that the trial's best FID, not its final one; ASHA compares
trials at epochs grace_period * reduction_factor**k, which the space
validation keeps on evaluation epochs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import yaml

from ganray.config import ConfigError
from ganray.storage import Storage, StorageError, check_name, check_uri, is_local, join
from ganray.tune.space import Space
from ganray.tune.trial import TrialContext, run_trial

log = logging.getLogger("ganray.tune")

# The Tune trial only waits on its Train run, so it holds no CPU: the cores go to
# the Train workers (train.workers x train.cpus_per_worker), and concurrency is
# computed from those. Ray rejects an all-zero request, hence 1 MiB of memory.
TRIAL_DRIVER_RESOURCES = {"CPU": 0, "memory": 2**20}
TUNE_DIR = "_tune"
SPACE_FILE = "space.yaml"
# Not lease.json: the experiment's lease must differ from a run's (EXPERIMENT/trials/ID/lease.json,
# or STORAGE/NAME/lease.json of a `ganray.train` run that happens to share the folder's name).
SEARCH_LEASE_FILE = "search_lease.json"


class SearchError(RuntimeError):
    """The search cannot start (storage, data, cluster, an incompatible earlier experiment)."""


# ---------------------------------------------------------------- set-up


def experiment_uri_for(storage_uri: str, name: str) -> str:
    root = os.path.abspath(storage_uri) if is_local(storage_uri) and "://" not in storage_uri else storage_uri
    return join(root, name)


def tune_location(experiment_uri: str, storage: Storage) -> tuple[str, Any]:
    """(path, pyarrow filesystem or None) of Tune's experiment state, as ray_trial does for Train."""
    path = join(experiment_uri, TUNE_DIR)
    if is_local(path):
        return os.path.abspath(path.removeprefix("file://")), None
    fs, inner = storage.arrow_fs(path)
    return inner, fs


def preflight(ctx: TrialContext, storage: Storage, check_data: bool = True) -> None:
    """Fail before any trial runs: data readable (storage was checked by hold_experiment)."""
    if check_data:
        from ganray.data.build import load_split

        cfg = ctx.trial_config({}, "preflight")
        try:
            load_split(cfg.data, "train", storage, limit=1)
        except Exception as e:  # noqa: BLE001 - any reader error means trials would fail
            raise SearchError(f"training data is not readable: {e}") from None


def record_space(storage: Storage, ctx: TrialContext, resuming: bool) -> None:
    """Write EXPERIMENT/space.yaml; when resuming, first check it matches (same space and settings)."""
    uri = join(ctx.experiment_uri, SPACE_FILE)
    now = yaml.safe_load(yaml.safe_dump(ctx.space.to_dict(), sort_keys=False))
    if resuming and storage.exists(uri):
        before = yaml.safe_load(storage.read_text(uri))
        if before != now:
            raise SearchError(
                f"experiment {ctx.experiment_uri} was started with a different space or settings "
                f"({_first_difference(before, now)}); re-run it with the same space file and options, "
                f"or pass --name for a new experiment"
            )
        return
    storage.write_text(uri, yaml.safe_dump(now, sort_keys=False))


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
    return f"{where}: was {a!r}, now {b!r}"


def trial_resources(ctx: TrialContext, cluster: dict[str, float]) -> tuple[float, float]:
    """(CPUs, GPUs) one trial's Train workers reserve (one GPU each when they use GPUs)."""
    cfg = ctx.trial_config({}, "resources")
    use_gpu = cfg.train.use_gpu == "yes" or (cfg.train.use_gpu == "auto" and cluster.get("GPU", 0) > 0)
    return cfg.train.workers * cfg.train.cpus_per_worker, cfg.train.workers if use_gpu else 0


def max_concurrency(ctx: TrialContext, cluster: dict[str, float], override: int = 0) -> int:
    """Trials that fit on the cluster at once (the space's or --max-concurrent's value wins)."""
    wanted = override or ctx.space.tune.max_concurrent_trials
    if wanted:
        return wanted
    cpus, gpus = trial_resources(ctx, cluster)
    fits = [ctx.space.tune.num_samples]
    if cpus > 0:
        fits.append(int(cluster.get("CPU", 0) // cpus))
    if gpus > 0:
        fits.append(int(cluster.get("GPU", 0) // gpus))
    n = min(fits)
    if n < 1:
        raise SearchError(
            f"one trial needs {cpus:g} CPUs and {gpus:g} GPUs (train.workers x train.cpus_per_worker) "
            f"but the cluster has {cluster.get('CPU', 0):g} CPUs and {cluster.get('GPU', 0):g} GPUs; "
            f"lower train.workers or train.cpus_per_worker"
        )
    return n


def build_searcher(space: Space, concurrency: int, statuses):
    """Optuna (TPE or random) behind a concurrency limit that ``statuses`` (a
    ganray.tune.callbacks.TrialStatuses) keeps from waiting on trials Tune lost."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from ganray.tune.callbacks import GuardedLimiter

    s = space.tune.searcher
    if s["sampler"] == "random":
        sampler = optuna.samplers.RandomSampler(seed=s["seed"])
    else:
        has_conditions = any(p.when for p in space.params)
        kw = {k: s[k] for k in ("n_startup_trials", "multivariate", "group") if k in s}
        if has_conditions:  # conditional spaces: model each active subset of params jointly
            kw.setdefault("multivariate", True)
            kw.setdefault("group", True)
        sampler = optuna.samplers.TPESampler(seed=s["seed"], **kw)
    searcher = OptunaSearch(
        space=space.define_by_run(),
        metric=space.tune.report_metric,
        mode=space.tune.mode,
        points_to_evaluate=[dict(p) for p in space.points] or None,
        sampler=sampler,
    )
    return GuardedLimiter(searcher, concurrency, statuses)


def build_scheduler(space: Space):
    from ray.tune.schedulers import FIFOScheduler

    from ganray.tune.callbacks import FinishingASHA

    s = space.tune.scheduler
    if s["type"] == "fifo":
        return FIFOScheduler()
    return FinishingASHA(
        last_epoch=space.base_config["train"]["epochs"],
        time_attr="epoch",
        max_t=s["max_t"],
        grace_period=s["grace_period"],
        reduction_factor=s["reduction_factor"],
        brackets=s["brackets"],
    )


# ---------------------------------------------------------------- the search


@dataclasses.dataclass
class SearchOptions:
    """Command-line settings of one search."""

    storage_uri: str
    name: str = ""
    resume: bool = False
    endpoint_url: str = ""
    region: str = ""
    address: str | None = None
    max_concurrent: int = 0
    retry_errored: bool = False
    check_data: bool = True
    mlflow_uri: str = ""  # MLflow tracking URI (file:/path or a server); empty = no MLflow


def run_search(space: Space, opts: SearchOptions):
    """Run (or resume) the search; return its Outcome (see ganray.tune.outcome).

    Raises SearchError, before any trial runs, when it cannot start; a new
    experiment folder is then removed again."""
    from ganray.train.ray_trial import check_address
    from ganray.tune.outcome import collect, write_outcome

    if opts.max_concurrent < 0:
        raise SearchError(f"--max-concurrent must be >= 0 (0: as many as fit), got {opts.max_concurrent}")
    name = opts.name or space.name
    try:  # before anything is written: a typo must not become a local folder named 's3:'
        check_uri(opts.storage_uri, allow_memory=False)
        check_name(name, "experiment name (--name)")
    except StorageError as e:
        raise SearchError(str(e)) from None
    try:  # a wrong address fails in seconds, before storage is touched
        check_address(opts.address)
    except ConnectionError as e:
        raise SearchError(str(e)) from None
    storage = Storage(opts.endpoint_url, opts.region)
    ctx = TrialContext(space, experiment_uri_for(opts.storage_uri, name), opts.endpoint_url, opts.region)
    try:
        ctx.trial_config({}, "check")
    except ConfigError as e:
        raise SearchError(f"{space.path}: {e}") from None
    new = not _exists(storage, ctx.experiment_uri)
    if opts.resume and new:  # before the lease: its writability probe would create the storage root
        raise SearchError(f"--resume: no experiment to resume at {ctx.experiment_uri}")
    lease = hold_experiment(storage, ctx.experiment_uri)
    try:
        try:
            tuner, ctx = start_search(space, opts, ctx, storage)
        except (SearchError, ConnectionError) as e:
            lease.release()  # first: its file would keep a new experiment folder from being removed
            if new:
                discard_experiment(storage, ctx.experiment_uri)
            raise SearchError(str(e)) from None
        # Ray's default console output ignores the status_table reporter; a user's own setting wins.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        grid = tuner.fit()
        outcome = collect(grid, ctx, storage)
        check_still_held(lease, ctx)
        write_outcome(outcome, storage)
        return outcome
    finally:  # also on Ctrl-C and errors; a killed search's lease goes stale instead
        lease.release()


def check_still_held(lease, ctx: TrialContext) -> None:
    """Raise SearchError if another search took the experiment over while this one ran
    (this driver stalled past its lease's expiry, e.g. a suspended machine): the
    summary must not be written over that search's."""
    if lease.lost:
        raise SearchError(
            f"another search took over this experiment while this one ran (its lease was not "
            f"refreshed in time: {lease.lost}); this search's trials stay in {ctx.trials_uri}, but "
            "its summary (best.json, results.parquet) is not written over the other search's; re-run "
            "with --resume once that search has finished"
        )


def hold_experiment(storage: Storage, experiment_uri: str):
    """Take the experiment's lease (ganray.train.lease) for this search, or raise SearchError
    naming the live search that holds it; then nothing is written but a probe that is removed."""
    from ganray.train.lease import Lease, LeaseError, new_owner

    lease = Lease(storage, experiment_uri, new_owner(), file=SEARCH_LEASE_FILE)
    try:  # first: a missing bucket or credentials are named as such (its probe file is removed)
        storage.check_writable(experiment_uri)
    except StorageError as e:
        raise SearchError(str(e)) from None
    try:
        lease.acquire()
        return lease
    except LeaseError:
        pass  # a live search holds it, or won a simultaneous start
    rec = lease.read() or {}
    raise SearchError(
        f"experiment {experiment_uri} is in use by another search (host {rec.get('host')}, pid "
        f"{rec.get('pid')}, started {rec.get('started')}): wait for it to finish, or pass --name for a "
        f"new experiment (a dead search's lease, {lease.uri}, expires {lease.stale_after_s:.0f} s after "
        f"its last heartbeat)"
    )


def _pinned_backbone(ctx: TrialContext, storage: Storage, resuming: bool) -> str:
    """The FID backbone every trial uses, resolved once here (see ganray.tune.backbone)."""
    from ganray.metrics.backbone_types import BackboneError
    from ganray.tune.backbone import pin_search_backbone

    try:
        record = pin_search_backbone(ctx, storage, resuming)
    except BackboneError as e:
        raise SearchError(f"FID backbone: {e}") from None
    if record:
        log.info("FID backbone for every trial: %s (%s)", record["metrics.backbone"], record["fid_label"])
    return record.get("metrics.backbone", "")


def _exists(storage: Storage, uri: str) -> bool:
    try:
        return storage.exists(uri)
    except Exception:  # noqa: BLE001 - unreadable storage is reported by preflight
        return False


def discard_experiment(storage: Storage, uri: str) -> None:
    """Remove what start-up wrote to a new experiment (space.yaml, backbone.json, an empty
    local folder)."""
    from ganray.tune.backbone import BACKBONE_FILE

    try:
        for name in (SPACE_FILE, BACKBONE_FILE):
            storage.remove(join(uri, name))
        if is_local(uri):
            os.rmdir(uri.removeprefix("file://"))
    except OSError:
        pass  # not empty, or never created: nothing of ours to remove


def start_search(space: Space, opts: SearchOptions, ctx: TrialContext, storage: Storage):
    """Check storage and data, pin the FID backbone, connect to Ray, record the space;
    return the Tuner to fit and the context its trials get."""
    import ray
    from ray import tune

    from ganray.train.ray_trial import connect
    from ganray.tune import live
    from ganray.tune.callbacks import TrialStatuses, WriteOutcome

    tune_path, tune_fs = tune_location(ctx.experiment_uri, storage)
    resuming = tune.Tuner.can_restore(tune_path, storage_filesystem=tune_fs)
    if opts.resume and not resuming:
        raise SearchError(f"--resume: no experiment to resume at {ctx.experiment_uri}")
    preflight(ctx, storage, opts.check_data)
    ctx = dataclasses.replace(ctx, backbone=_pinned_backbone(ctx, storage, resuming))
    connect(opts.address)
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), TRIAL_DRIVER_RESOURCES)
    if resuming:
        record_space(storage, ctx, resuming)
        log.info(
            "resuming experiment %s (finished trials are kept, unfinished ones continue)", ctx.experiment_uri
        )
        tuner = tune.Tuner.restore(
            tune_path,
            trainable,
            resume_unfinished=True,
            resume_errored=opts.retry_errored,
            storage_filesystem=tune_fs,
        )
        return tuner, ctx
    concurrency = max_concurrency(ctx, ray.cluster_resources(), opts.max_concurrent)
    record_space(storage, ctx, resuming)
    log.info(
        "experiment %s: %d trials, %d at a time, %s search, %s scheduler, objective %s (%s)",
        ctx.experiment_uri,
        space.tune.num_samples,
        concurrency,
        space.tune.searcher["sampler"],
        space.tune.scheduler["type"],
        space.tune.report_metric,
        space.tune.mode,
    )
    statuses = TrialStatuses()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=space.tune.report_metric,
            mode=space.tune.mode,
            num_samples=space.tune.num_samples,
            search_alg=build_searcher(space, concurrency, statuses),
            scheduler=build_scheduler(space),
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
            reuse_actors=reuse_actors(space),
        ),
        run_config=tune.RunConfig(
            name=os.path.basename(tune_path),
            storage_path=os.path.dirname(tune_path),
            storage_filesystem=tune_fs,
            # A trial's Train run retries its own worker failures (train.max_failures);
            # Tune must not re-run a trial that failed for good (e.g. NaN losses).
            failure_config=tune.FailureConfig(max_failures=0),
            # ganray's outcome files; TensorBoard scalars (and MLflow with --mlflow-uri, ganray.tune.live)
            callbacks=[
                statuses,
                WriteOutcome(ctx),
                *live.callbacks(ctx.experiment_uri, opts.name or space.name, opts),
            ],
            progress_reporter=status_table(space),
            verbose=1,  # the status table; ganray's trials log one line per epoch themselves
        ),
    )
    return tuner, ctx


def _trial_name(trial) -> str:
    return trial.trial_id


def reuse_actors(space: Space) -> bool:
    """Whether a finished trial's process may run the next trial (it has imported Ray
    Train and torch already: ~3 s a trial on 2 cores).

    Only when every trial ends by itself (FIFO). Ray's function trainable re-uses a
    process only if the trial's thread ends within TUNE_FUNCTION_THREAD_TIMEOUT_S
    (2 s) of Tune stopping it; a trial ASHA stops early is still training, and the
    next trial is then errored ("Could not re-use actor for trial ...:
    reset_config()"). That is what hung submitted searches: stock ASHA also stopped
    every trial at its last report (max_t), 2 s or more before its Train run had shut
    down on a `ray start` cluster (workers polled every 2 s). Measured under ``ray
    job submit``: last report 00:20:26, "Shutting down 2 workers" 00:20:28.87,
    re-use abandoned 00:20:28.91, then the search waited with 0/2 CPUs in use.
    """
    return space.tune.scheduler["type"] == "fifo"


def status_table(space: Space):
    """Tune's periodic status table: each trial's searched params, epoch, FID and best FID.

    Ray 2.60's default console output ignores a passed reporter (see run_search) and
    infers its columns from a param_space, which a define-by-run Optuna search lacks."""
    from ray.tune import CLIReporter

    m = space.tune.metric
    return CLIReporter(
        # Unconditional params only: at the end Ray prints "Current best trial ... parameters=",
        # looking every column up in the best trial's config with no default, and a conditional
        # param that trial did not draw (optim.momentum of an adam trial in dcgan.yaml) raised
        # KeyError there, failing a finished search with exit 1.
        parameter_columns=[p.key for p in space.params if not p.when],
        metric_columns={"epoch": "epoch", m: m, f"best_{m}": f"best {m}"},
        max_report_frequency=30,  # seconds; a trial epoch takes about a minute
        sort_by_metric=True,  # by TuneConfig's metric: best_<metric>
    )
