"""``python -m ganray.tune`` exit codes for a search that cannot start (2), the searcher guard
that keeps a search from waiting on a trial Ray Tune lost, and when trial actors are re-used.

Everything here fails before any trial runs, so no Ray is started (exit 1, 3 and 0 run real
trials: tests/integration/test_tune.py and test_job_submit.py)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from ganray.tune.__main__ import main
from ganray.tune.callbacks import GuardedLimiter, TrialStatuses
from ganray.tune.driver import reuse_actors
from ganray.tune.space import parse_space

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "tune_spaces" / "quickstart.yaml")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_cli(capsys, *args: str) -> tuple[int, str]:
    """Run the CLI in this process; return (exit status, stderr)."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--max-concurrent", "-1"], "argument --max-concurrent: must be >= 0, got -1"),
        (["--max-concurrent", "two"], "argument --max-concurrent: 'two' is not an integer"),
        (["--num-samples", "0"], "argument --num-samples: must be >= 1, got 0"),
        (["--set", "optim.lr=-1"], "optim.lr"),
        (["--set", "no.such_key=1"], "no.such_key"),
        (["--resume"], "--resume: no experiment to resume"),
        (
            ["--set", "data.source=parquet", "--set", "data.uri=/nonexistent/shards"],
            "training data is not readable",
        ),
        (
            ["--address", "127.0.0.1:1", "--no-data-check"],
            "cannot reach the Ray cluster at 127.0.0.1:1 (--address)",
        ),
        (["--address", "http//nowhere", "--no-data-check"], "'http//nowhere' (--address) is not host:port"),
        (["--address", "127.0.0.1:99999"], "'127.0.0.1:99999' (--address) is not host:port"),
        (["--address", ""], "--address is empty"),
        (["--address", "ray://127.0.0.1:1"], "cannot reach the Ray cluster at ray://127.0.0.1:1 (--address)"),
    ],
)
def test_search_that_cannot_start_exits_2_and_leaves_nothing(tmp_path, capsys, args, says):
    storage = tmp_path / "runs"
    start = time.monotonic()
    code, err = run_cli(capsys, "--space", QUICKSTART, "--storage", str(storage), *args)
    assert code == 2, err
    assert says in err
    assert "Traceback" not in err
    assert time.monotonic() - start < 30  # an unreachable cluster must not hang
    assert not (storage / "quickstart").exists()  # no empty experiment folder left behind


def test_unreachable_ray_address_from_the_environment_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # as `ray job submit` or a user's shell sets it
    code, err = run_cli(capsys, "--space", QUICKSTART, "--storage", str(tmp_path), "--no-data-check")
    assert code == 2 and "cannot reach the Ray cluster at 127.0.0.1:1 (RAY_ADDRESS)" in err
    assert not (tmp_path / "quickstart").exists()


def test_bad_space_and_unwritable_storage_exit_2(tmp_path, capsys):
    code, err = run_cli(capsys, "--space", str(tmp_path / "missing.yaml"), "--storage", str(tmp_path))
    assert code == 2 and "missing.yaml" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = run_cli(capsys, "--space", QUICKSTART, "--storage", str(blocker / "runs"))
    assert code == 2 and "cannot write to storage" in err and "Traceback" not in err


def _trial(trial_id: str, status: str):
    return SimpleNamespace(trial_id=trial_id, status=status)  # what the callback reads of a Tune Trial


def test_guard_frees_the_slot_of_a_trial_tune_ended_without_telling_the_searcher():
    statuses = TrialStatuses()
    searcher = OptunaSearch(space={"x": tune.uniform(0, 1)}, metric="m", mode="min", seed=0)
    limiter = GuardedLimiter(searcher, 1, statuses)
    assert limiter.suggest("a") is not None
    statuses.on_step_end(0, [_trial("a", "RUNNING")])
    assert limiter.suggest("b") is None  # "a" runs: at the concurrency limit
    # A failed actor re-use marks "a" ERROR without Searcher.on_trial_complete: before the
    # guard, the limiter waited for "a" for ever and the search hung.
    statuses.on_step_end(1, [_trial("a", "ERROR")])
    assert limiter.suggest("b") is not None
    assert limiter.live_trials == {"b"}
    # Tune completing "a" later (its normal path) changes nothing.
    limiter.on_trial_complete("a", error=True)
    assert limiter.live_trials == {"b"}


def test_guard_keeps_its_live_record_across_searcher_state_restore():
    statuses = TrialStatuses()
    searcher = OptunaSearch(space={"x": tune.uniform(0, 1)}, metric="m", mode="min", seed=0)
    limiter = GuardedLimiter(searcher, 1, statuses)
    limiter.suggest("a")
    state = limiter.get_state()
    assert "_statuses" not in state
    limiter.set_state(state)
    statuses.on_step_begin(2, [_trial("a", "TERMINATED")])
    assert limiter.suggest("b") is not None


def _space(scheduler: dict):
    return parse_space(
        {
            "base": "quickstart",
            "fixed": {"train.epochs": 4, "metrics.eval_every": 1},
            "search": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}},
            "tune": {"num_samples": 2, "scheduler": scheduler},
        }
    )


def test_trial_actors_are_reused_only_when_trials_end_by_themselves():
    # ASHA stops trials at a report while their Train run still winds down: re-use would fail.
    assert reuse_actors(_space({"type": "asha", "grace_period": 1})) is False
    assert reuse_actors(_space({"type": "fifo"})) is True


def test_asha_lets_a_trial_at_its_last_epoch_end_by_itself():
    from ray.tune.schedulers import TrialScheduler

    from ganray.tune.callbacks import FinishingASHA

    asha = FinishingASHA(
        last_epoch=4,
        time_attr="epoch",
        metric="best_fid",
        mode="min",
        max_t=4,
        grace_period=1,
        reduction_factor=2,
    )
    good, bad = _trial("good", "RUNNING"), _trial("bad", "RUNNING")
    for t in (good, bad):
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, good, {"epoch": 1, "best_fid": 10.0}) == TrialScheduler.CONTINUE
    # An early stop at a rung (epoch 1, worse than the other trial) stays a stop.
    assert asha.on_trial_result(None, bad, {"epoch": 1, "best_fid": 50.0}) == TrialScheduler.STOP
    # At max_t = the last epoch, stock ASHA says STOP while the trial's Train run still
    # shuts down; the trial ends by itself a moment later instead.
    assert asha.on_trial_result(None, good, {"epoch": 4, "best_fid": 5.0}) == TrialScheduler.CONTINUE


def test_status_table_final_line_survives_a_best_trial_without_a_conditional_param():
    from ray.tune.progress_reporter import _best_trial_str

    from ganray.tune.driver import status_table
    from ganray.tune.space import load_space

    space = load_space(str(Path(__file__).resolve().parents[1] / "tune_spaces/dcgan.yaml"))
    columns = status_table(space)._parameter_columns
    assert (
        "optim.lr" in columns and "optim.momentum" not in columns
    )  # momentum: only for rmsprop/sgd/nesterov
    drawn = {
        p.key: 0.5 for p in space.params if not p.when or p.key == "optim.beta1"
    }  # an adam trial's params
    adam = SimpleNamespace(
        trial_id="t1", last_result={"fid": 30.0, "config": {**drawn, "optim.name": "adam"}}
    )
    assert "'optim.name': 'adam'" in _best_trial_str(adam, "fid", columns)
    with pytest.raises(
        KeyError, match="optim.momentum"
    ):  # what every column gave: a finished search exited 1
        _best_trial_str(adam, "fid", [p.key for p in space.params])
