"""One search per experiment: ``python -m ganray.tune`` holds EXPERIMENT/search_lease.json
(ganray.train.lease) for its whole life. A second search on the same experiment exits 2 before
it writes anything or starts Ray; a dead search's lease is taken over. No trial runs here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ganray.storage import Storage
from ganray.train.lease import LEASE_FILE, Lease
from ganray.tune.driver import SEARCH_LEASE_FILE
from tests.test_tune_cli import QUICKSTART, ROOT, run_cli


def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_search_on_a_live_experiment_exits_2_and_writes_nothing(tmp_path):
    experiment = tmp_path / "runs" / "quickstart"
    experiment.mkdir(parents=True)
    (experiment / "space.yaml").write_text("written by the first search\n")
    (experiment / "backbone.json").write_text('{"metrics.backbone": "first"}\n')
    first = Lease(Storage(), str(experiment), "first-search", heartbeat_s=60, file=SEARCH_LEASE_FILE)
    first.acquire()  # this test process is the live first search
    try:
        before = _files(experiment)
        # A real second process. Without the lease check, --resume of an experiment with no Tune
        # state would fail differently, also before Ray starts: this test never runs a search.
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        args = ["--space", QUICKSTART, "--storage", str(tmp_path / "runs"), "--resume"]
        proc = subprocess.run(
            [sys.executable, "-m", "ganray.tune", *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2, proc.stderr
        error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1, proc.stderr
        assert f"experiment {experiment} is in use by another search" in error[0]
        assert f"host {socket.gethostname()}, pid {os.getpid()}" in error[0]
        assert "wait for it to finish, or pass --name for a new experiment" in error[0]
        assert "Traceback" not in proc.stderr and "no experiment to resume" not in proc.stderr
        assert _files(experiment) == before  # space.yaml, backbone.json and our lease untouched
        first.check()  # still ours
    finally:
        first.release()


def test_a_dead_search_lease_is_taken_over_and_released_at_exit(tmp_path, capsys):
    experiment = tmp_path / "quickstart"
    experiment.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"owner": "killed-search", "host": socket.gethostname(), "pid": dead.pid, "started": "x"}
    record |= {"heartbeat": time.time(), "stale_after_s": 180.0}  # fresh, but its process is gone
    (experiment / SEARCH_LEASE_FILE).write_text(json.dumps(record))
    # Taking the lease comes first; then the search fails fast on its data (no Ray, no trial).
    bad_data = ["--set", "data.source=parquet", "--set", "data.uri=/nonexistent/shards"]
    code, err = run_cli(capsys, "--space", QUICKSTART, "--storage", str(tmp_path), *bad_data)
    assert code == 2 and "training data is not readable" in err, err
    assert f"taking over the stale lease of {experiment} (host {socket.gethostname()}, pid {dead.pid}" in err
    assert not (experiment / SEARCH_LEASE_FILE).exists()  # released when the search ended
    # The same command now starts (and fails on its data) without any lease message.
    code, err = run_cli(capsys, "--space", QUICKSTART, "--storage", str(tmp_path), *bad_data)
    assert code == 2 and "lease" not in err


def test_the_experiment_lease_is_not_a_run_lease():
    # Trials' runs lease EXPERIMENT/trials/ID/lease.json; a `ganray.train` run named like the
    # experiment would lease STORAGE/NAME/lease.json: neither is the search's file.
    assert SEARCH_LEASE_FILE != LEASE_FILE


def test_a_search_whose_lease_was_taken_over_does_not_write_its_summary(tmp_path):
    # The first search's driver stalls (a suspended machine) past its lease's expiry; a second
    # search takes the experiment over; the first notices at its next heartbeat.
    from ganray.tune.driver import SearchError, check_still_held
    from ganray.tune.trial import TrialContext

    storage, experiment = Storage(), str(tmp_path / "quickstart")
    first = Lease(storage, experiment, "first", heartbeat_s=0.5, stale_after_s=0.2, file=SEARCH_LEASE_FILE)
    first.acquire()
    ctx = TrialContext(space=None, experiment_uri=experiment)
    check_still_held(first, ctx)  # held: nothing to say
    time.sleep(0.3)
    second = Lease(storage, experiment, "second", file=SEARCH_LEASE_FILE)
    second.acquire()  # the first's heartbeat is older than its stale_after_s
    try:
        deadline = time.time() + 10
        while not first.lost and time.time() < deadline:
            time.sleep(0.1)
        with pytest.raises(SearchError, match="another search took over this experiment") as e:
            check_still_held(first, ctx)
        assert f"trials stay in {experiment}/trials" in str(e.value) and "--resume" in str(e.value)
        first.release()  # leaves the second search's lease alone
        assert json.loads((tmp_path / "quickstart" / SEARCH_LEASE_FILE).read_text())["owner"] == "second"
    finally:
        second.release()
