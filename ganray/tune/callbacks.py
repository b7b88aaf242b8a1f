"""The Tune callbacks, searcher guard and scheduler the search driver adds.

``WriteOutcome`` rewrites best.json and results.parquet whenever a trial ends,
so an experiment whose driver dies (killed, its node lost, ``ray job stop``)
still names its best finished trial for ``ganray.pull``.

The guard keeps a search from waiting forever on a trial Ray Tune lost track of.

Ray Tune 2.60 can end a trial without telling the searcher: when re-using a
finished trial's actor fails ("Could not re-use actor for trial ...:
Trainable runner reuse requires reset_config() ..."), the trial is marked
ERROR but ``Searcher.on_trial_complete`` is never called. A
``ConcurrencyLimiter`` then counts that trial as running for ever, suggests
nothing more, and the driver blocks in ``TuneController._update_trial_queue``
with no trial running (seen under ``ray job submit``: 0/2 CPUs for minutes).

``TrialStatuses`` (a Tune callback) records which trials Tune has ended, at
the start and end of every controller step; ``GuardedLimiter`` checks that
record whenever Tune asks for a new trial and reports every ended-but-unreported
trial to the searcher as failed, so the search goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter

log = logging.getLogger("ganray.tune")

ENDED = ("ERROR", "TERMINATED")


class WriteOutcome(Callback):
    """Write the experiment's outcome (see ganray.tune.outcome) each time a trial ends."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx  # the driver's TrialContext

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._write(trials, ending=trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._write(trials)

    def _write(self, trials: list, ending: str = "") -> None:
        from ganray.storage import Storage
        from ganray.tune.outcome import BEST_FILE, collect_trials, write_outcome

        storage = Storage(self.ctx.endpoint_url, self.ctx.region)
        try:
            write_outcome(collect_trials(trials, self.ctx, storage, ending), storage)
        except Exception as e:  # noqa: BLE001 - Tune would fail the trial; the final write retries
            log.warning("could not update %s/%s yet: %s", self.ctx.experiment_uri, BEST_FILE, e)


class TrialStatuses(Callback):
    """The ids of the trials Tune has ended (ERROR or TERMINATED), refreshed every controller step."""

    def __init__(self) -> None:
        self.ended: set[str] = set()

    def note(self, trials: list) -> None:
        self.ended = {t.trial_id for t in trials if t.status in ENDED}

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self.note(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.note(trials)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the record is rebuilt at the next step.
        return {"ended": set()}


class GuardedLimiter(ConcurrencyLimiter):
    """A ConcurrencyLimiter that frees the slot of a trial Tune ended without reporting it."""

    def __init__(self, searcher, max_concurrent: int, statuses: TrialStatuses) -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self._statuses = statuses

    def suggest(self, trial_id: str):
        statuses = getattr(self, "_statuses", None)
        for lost in sorted(self.live_trials & (statuses.ended if statuses else set())):
            log.warning(
                "trial %s ended without its result reaching the searcher (a Ray Tune fault); "
                "counting it as failed so the search goes on",
                lost,
            )
            self.on_trial_complete(lost, error=True)
        return super().suggest(trial_id)

    # The searcher's saved state must not carry (or replace) the live status record.
    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state.pop("_statuses", None)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state({k: v for k, v in state.items() if k != "_statuses"})


class FinishingASHA(ASHAScheduler):
    """ASHA that lets a trial at its last epoch end by itself instead of stopping it.

    Stock ASHA stops every trial at max_t, i.e. at its last epoch's report, while
    the trial's Train run is still shutting down; Tune then kills the trial's
    process, and with it the Train controller before it released its workers'
    placement group. Ray Train's placement-group cleaner frees those CPUs a few
    seconds later, if its State API finds the cluster (on a machine running
    several Ray clusters it must be told where: ``start_local_ray`` in
    ganray.train.ray_trial, README "Several Ray clusters on one machine"). A
    trial at its last epoch ends moments later anyway; letting it do so shuts
    its Train run down cleanly, with nothing left to clean. Early stops at the
    rungs are unchanged.
    """

    def __init__(self, last_epoch: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_epoch = last_epoch  # train.epochs

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) >= self.last_epoch:
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action
