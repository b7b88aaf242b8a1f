"""One Tune trial of a search: fit the trial's TorchTrainer, forwarding each epoch to Tune.

``run_trial`` is the Tune trainable (a function holding ~0 CPU): it builds the
trial's config from the sampled params (``TrialContext``), builds its
TorchTrainer (``ganray.train.ray_trial.build_trainer``) and fits it; a Train
callback adds the running best of the metric to every epoch report and
forwards it to Tune, logging one line per trial-epoch. This module runs in the
Tune trial and Train controller processes, where import time counts.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from ganray.storage import Storage, join
from ganray.tune.space import Space

log = logging.getLogger("ganray.tune")

TRIALS_DIR = "trials"


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its sampled params (shipped with tune.with_parameters)."""

    space: Space
    experiment_uri: str
    endpoint_url: str = ""
    region: str = ""
    backbone: str = ""  # the FID backbone pinned by the driver for every trial ('' = the config's)

    @property
    def trials_uri(self) -> str:
        return join(self.experiment_uri, TRIALS_DIR)

    def trial_config(self, sampled: dict[str, Any], trial_id: str):
        storage = {
            "uri": self.trials_uri,
            "run_name": trial_id,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
        }
        cfg = self.space.trial_config(sampled, storage)
        if self.backbone:
            cfg.metrics.backbone = self.backbone
        return cfg


def better(a: float, b: float | None, mode: str) -> bool:
    return b is None or (a < b if mode == "min" else a > b)


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def best_of(history: list[dict[str, Any]], metric: str, mode: str) -> tuple[float | None, int | None]:
    """(best value, its epoch) of ``metric`` over a run's epochs; (None, None) if never evaluated."""
    best, epoch = None, None
    for row in history:
        v = row.get(metric)
        if finite(v) and better(float(v), best, mode):
            best, epoch = float(v), int(row["epoch"])
    return best, epoch


def read_history(storage: Storage, run_uri: str) -> list[dict[str, Any]]:
    """A run's metrics.jsonl rows (see ganray.train.artifacts), read without importing torch:
    this runs in the Tune trial and Train controller processes, where start-up time counts."""
    import json

    uri = join(run_uri, "metrics.jsonl")
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def _forwarder(metric: str, mode: str, best: float | None, trial_id: str, epochs: int):
    """A TuneReportCallback that adds the running best of ``metric`` to every report."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class ForwardToTune(TuneReportCallback):
        def __init__(self) -> None:
            super().__init__()
            self.best = best

        def after_report(self, run_context, metrics, checkpoint):
            from ganray.logs import setup_logging

            setup_logging()
            row = dict(metrics[0])  # rank 0's report: the whole epoch's row
            v = row.get(metric)
            if finite(v) and better(float(v), self.best, mode):
                self.best = float(v)
            row[f"best_{metric}"] = self.best if self.best is not None else float("nan")
            shown = f"{metric} {v:.2f}" if finite(v) else f"no {metric} this epoch"
            log.info(
                "trial %s epoch %s/%d: %s, best %s, d_loss %.3f, g_loss %.3f",
                trial_id,
                row.get("epoch"),
                epochs,
                shown,
                f"{self.best:.2f}" if self.best is not None else "-",
                row.get("d_loss", float("nan")),
                row.get("g_loss", float("nan")),
            )
            super().after_report(run_context, [row], checkpoint)

    return ForwardToTune()


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """The Tune trainable: fit this trial's TorchTrainer, forwarding each epoch's report."""
    from ray import tune

    from ganray.logs import setup_logging
    from ganray.train.ray_trial import build_trainer, raise_if_failed

    setup_logging()
    trial_id = tune.get_context().get_trial_id()
    cfg = ctx.trial_config(config, trial_id)
    storage = Storage.from_config(cfg.storage)
    run_uri = join(cfg.storage.uri, cfg.storage.run_name)
    metric, mode = ctx.space.tune.metric, ctx.space.tune.mode
    history = read_history(storage, run_uri)
    best, _ = best_of(history, metric, mode)
    if history and storage.exists(join(run_uri, "done.json")):
        # Finished before an interruption, but the experiment state had not
        # recorded it yet: report the stored result instead of training again.
        log.info("trial %s already finished (%s); reporting its stored result", trial_id, run_uri)
        row = {k: v for k, v in history[-1].items() if v is not None}
        tune.report({**row, f"best_{metric}": best if best is not None else float("nan")})
        return
    log.info("trial %s: %s", trial_id, ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(config.items())))
    forward = _forwarder(metric, mode, best, trial_id, cfg.train.epochs)
    # The trial id owns the run's lease, so a restarted trial takes back its own.
    build_trainer(cfg, callbacks=[forward], lease_owner=f"tune-trial-{trial_id}").fit()
    # A NaN loss ends the workers cleanly (no Train retries: it is deterministic)
    # and leaves error.json; raising it marks this trial errored with the reason.
    raise_if_failed(cfg)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
