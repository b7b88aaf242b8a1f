"""A finished (or interrupted) search: the trials table, best.json and results.parquet.

Everything here is read back from ganray's own run layout on storage (each
trial's metrics.jsonl and checkpoint sidecars), so the best FID is the best
over *all* evaluated epochs of a trial, not its last report, and the
checkpoint named in best.json is the one written at that epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from typing import Any

from ganray import checkpoint as ckpt
from ganray.storage import Storage, join, relative_to
from ganray.train import artifacts
from ganray.tune.backbone import read_pinned

log = logging.getLogger("ganray.tune")

BEST_FILE = "best.json"
RESULTS_FILE = "results.parquet"

# Tune's trial states, and what they mean for a ganray trial.
FINISHED, STOPPED, ERRORED, UNFINISHED = "finished", "stopped", "errored", "unfinished"


@dataclasses.dataclass
class TrialOutcome:
    trial_id: str
    status: str  # finished | stopped (early, by ASHA) | errored | unfinished
    params: dict[str, Any]
    run_uri: str
    epochs: int = 0  # epochs completed
    best: float | None = None  # best metric over the evaluated epochs
    best_epoch: int | None = None
    checkpoint_uri: str | None = None  # the checkpoint written at best_epoch
    error: str = ""
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list, repr=False)


@dataclasses.dataclass
class Outcome:
    experiment_uri: str
    metric: str
    mode: str
    trials: list[TrialOutcome]
    backbone: dict[str, Any] = dataclasses.field(default_factory=dict)  # ganray.tune.backbone's record

    @property
    def best(self) -> TrialOutcome | None:
        from ganray.tune.trial import better

        pick = None
        for t in self.trials:
            if t.best is not None and (pick is None or better(t.best, pick.best, self.mode)):
                pick = t
        return pick


def short_error(err: BaseException | str | None, limit: int = 300) -> str:
    """The most telling line of a (possibly wrapped, multi-line) trial error."""
    if not err:
        return ""
    text = str(err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Prefer the innermost exception line ("SomeError: message").
    exc = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", ln)]
    line = exc[-1] if exc else (lines[-1] if lines else text)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def trial_outcome(
    storage: Storage,
    trials_uri: str,
    trial_id: str,
    params: dict[str, Any],
    tune_status: str,
    error: str,
    metric: str,
    mode: str,
    stopped_early: bool = False,
) -> TrialOutcome:
    """One trial's outcome from its run folder.

    ``tune_status`` is Tune's (TERMINATED, ERROR, ...); ``stopped_early`` says the
    scheduler ended the trial (its last result is marked done). A TERMINATED
    trial that neither finished nor was stopped was cut short by an interruption.
    """
    from ganray.tune.trial import best_of

    run_uri = join(trials_uri, trial_id)
    history = artifacts.read_metrics(storage, run_uri)
    done = storage.exists(join(run_uri, "done.json"))
    if tune_status == "ERROR":
        status = ERRORED
    elif done:
        status = FINISHED
    elif tune_status == "TERMINATED" and stopped_early:
        status = STOPPED
    else:
        status = UNFINISHED
    best, best_epoch = best_of(history, metric, mode)
    uri = None
    if best_epoch is not None:
        kept = {c.epoch: c.uri for c in ckpt.list_checkpoints(storage, run_uri)}
        uri = kept.get(best_epoch)
    return TrialOutcome(
        trial_id, status, params, run_uri, len(history), best, best_epoch, uri, error, history
    )


def collect(grid, ctx, storage: Storage) -> Outcome:
    """Gather every trial of a Tune ResultGrid from storage."""
    return collect_trials(grid._experiment_analysis.trials, ctx, storage)  # Tune's trials (no public API)


def collect_trials(trials: list, ctx, storage: Storage, ending: str = "") -> Outcome:
    """Gather Tune's trials (``ray.tune.experiment.Trial``) from storage; ``ending`` names a
    trial Tune is completing right now (still RUNNING to Tune), counted as TERMINATED."""
    from ganray.tune.trial import TRIALS_DIR

    metric, mode = ctx.space.tune.metric, ctx.space.tune.mode
    out = []
    for t in trials:
        status = "TERMINATED" if t.trial_id == ending else t.status
        error = ""
        if status == "ERROR":
            try:
                error = short_error(t.get_pickled_error() or t.get_error())
            except Exception as e:  # noqa: BLE001 - an unreadable error file must not lose the outcome
                error = f"(error not readable: {e})"
        out.append(
            trial_outcome(
                storage,
                join(ctx.experiment_uri, TRIALS_DIR),
                t.trial_id,
                dict(t.config or {}),
                status,
                error,
                metric,
                mode,
                stopped_early=bool((t.last_result or {}).get("done")),
            )
        )
    out.sort(key=lambda t: t.trial_id)
    return Outcome(ctx.experiment_uri, metric, mode, out, read_pinned(storage, ctx.experiment_uri))


# ---------------------------------------------------------------- outputs


def table(outcome: Outcome) -> str:
    """The trials as a fixed-width text table, best first (errored ones last, with their reason)."""
    m = outcome.metric
    sign = 1 if outcome.mode == "min" else -1

    def order(t: TrialOutcome):
        return (t.best is None, sign * t.best if t.best is not None else 0.0, t.trial_id)

    keys = sorted({k for t in outcome.trials for k in t.params})
    head = ["trial", "status", f"best {m}", "at epoch", "epochs"] + keys
    rows = []
    for t in sorted(outcome.trials, key=order):
        rows.append(
            [
                t.trial_id,
                t.status,
                f"{t.best:.2f}" if t.best is not None else "-",
                str(t.best_epoch or "-"),
                str(t.epochs),
            ]
            + [_fmt(t.params.get(k)) for k in keys]
        )
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for t in outcome.trials:
        if t.error:
            lines.append(f"{t.trial_id} errored: {t.error}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def best_record(outcome: Outcome, storage: Storage) -> dict[str, Any] | None:
    """The content of best.json (None if no trial was evaluated)."""
    b = outcome.best
    if b is None:
        return None
    sha = None
    if b.checkpoint_uri:
        info = next((c for c in ckpt.list_checkpoints(storage, b.run_uri) if c.uri == b.checkpoint_uri), None)
        sha = info.sha256 if info else None
    config_uri = join(b.run_uri, "config.yaml")
    return {
        "experiment": outcome.experiment_uri,
        "trial_id": b.trial_id,
        "status": b.status,
        "metric": outcome.metric,
        "mode": outcome.mode,
        f"best_{outcome.metric}": b.best,
        "epoch": b.best_epoch,
        "epochs_completed": b.epochs,
        # Locations relative to the experiment (what ganray.pull resolves, so a moved or
        # copied experiment pulls from itself); the *_uri fields are information only.
        "run": relative_to(b.run_uri, outcome.experiment_uri),
        "checkpoint": relative_to(b.checkpoint_uri, outcome.experiment_uri) if b.checkpoint_uri else None,
        "checkpoint_uri": b.checkpoint_uri,
        "checkpoint_sha256": sha,
        "grid_uri": artifacts.grid_uri(b.run_uri, b.best_epoch),
        "run_uri": b.run_uri,
        "params": b.params,
        **outcome.backbone,  # the one FID backbone of the whole search
        "config": _read_yaml(storage, config_uri),
    }


def _read_yaml(storage: Storage, uri: str) -> dict[str, Any] | None:
    import yaml

    return yaml.safe_load(storage.read_text(uri)) if storage.exists(uri) else None


def results_rows(outcome: Outcome) -> list[dict[str, Any]]:
    """One row per (trial, epoch): status, params (``param.<key>``) and every metric of that epoch."""
    rows = []
    for t in outcome.trials:
        base = {
            "trial_id": t.trial_id,
            "status": t.status,
            "error": t.error or None,
            f"trial_best_{outcome.metric}": t.best,
            **outcome.backbone,  # per epoch rows repeat what the evaluation recorded
        }
        base.update({f"param.{k}": v for k, v in t.params.items()})
        if not t.history:
            rows.append(dict(base))
        for r in t.history:
            rows.append({**base, **r})
    return rows


def write_outcome(outcome: Outcome, storage: Storage) -> dict[str, Any] | None:
    """Write best.json and results.parquet to the experiment; return best.json's content."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = results_rows(outcome)
    if rows:
        cols = sorted(
            {k for r in rows for k in r}, key=lambda k: (k not in ("trial_id", "status", "epoch"), k)
        )
        table_ = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows])
        storage.atomic_write(
            join(outcome.experiment_uri, RESULTS_FILE), lambda fh: pq.write_table(table_, fh)
        )
    best = best_record(outcome, storage)
    if best is not None:
        storage.write_text(join(outcome.experiment_uri, BEST_FILE), json.dumps(best, indent=2, default=str))
    return best
