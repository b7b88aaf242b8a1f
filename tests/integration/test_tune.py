"""The search service end to end: real local Ray (started by the CLI), real S3 (moto's server on loopback).

- a 2-trial search on S3, one trial after the other (the second diverges to NaN and is reported
  errored, the search goes on), writes Tune state, trial runs, best.json and results.parquet;
  best.json's checkpoint is pulled and turned into an image grid;
- an interrupted experiment (the driver killed after its first trial finished) already names that
  trial in best.json, so ganray.pull works on it, and resumes without repeating that trial;
- a missing bucket fails at start-up, before any trial.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from PIL import Image

from ganray.storage import Storage, join
from ganray.train import artifacts
from ganray.tune.driver import SEARCH_LEASE_FILE

pytestmark = pytest.mark.integration

RECIPE = {"optim.name": "adam", "optim.lr": 2e-4, "optim.d_lr_ratio": 1.0}
DIVERGES = {"optim.name": "sgd", "optim.lr": 1.0, "optim.d_lr_ratio": 10.0}  # NaN within the first epoch


def test_search_on_s3_pull_and_generate(tmp_path, bucket, s3_endpoint, cli, tiny_space):
    space = tiny_space(tmp_path / "space.yaml", [RECIPE, DIVERGES], num_samples=2, lr_high=1.0)
    storage_uri = f"s3://{bucket}/searches"
    proc = cli.run(
        "ganray.tune",
        "--space",
        space,
        "--storage",
        storage_uri,
        "--name",
        "e2e",
        "--endpoint-url",
        s3_endpoint,
        "--address",
        "local",
        "--max-concurrent",
        "1",
    )
    assert proc.returncode == 0, cli.show(proc)
    assert "Could not re-use actor" not in proc.stderr  # the second trial started cleanly

    s = Storage(s3_endpoint)
    exp = f"{storage_uri}/e2e"
    best = json.loads(s.read_text(join(exp, "best.json")))
    trials = sorted(t for t in s.listdir(join(exp, "trials")) if not t.startswith("_"))
    assert len(trials) == 2 and best["trial_id"] in trials
    assert best["params"] == RECIPE and best["status"] == "finished"
    # The best FID over all evaluated epochs of that trial, and the checkpoint of that epoch.
    history = artifacts.read_metrics(s, best["run_uri"])
    assert [r["epoch"] for r in history] == [1, 2]
    fids = {r["epoch"]: r["fid"] for r in history}
    assert best["best_fid"] == min(fids.values()) and fids[best["epoch"]] == best["best_fid"]
    assert best["checkpoint_uri"].endswith(f"checkpoints/epoch_{best['epoch']:04d}.pt")
    assert s.exists(best["checkpoint_uri"]) and s.exists(best["grid_uri"])
    # Tune's experiment state, Train's run state and the FID cache are on S3 too.
    assert s.exists(join(exp, "_tune")) and s.exists(join(exp, "trials", "_ray"))
    assert s.exists(join(exp, "space.yaml"))
    assert not s.exists(join(exp, SEARCH_LEASE_FILE))  # the search's lease, released at its end

    # The diverged trial is errored with its reason; the search finished anyway.
    (bad,) = [t for t in trials if t != best["trial_id"]]
    assert f"{bad} errored:" in proc.stdout and "NonFiniteLossError" in proc.stdout
    with s.open(join(exp, "results.parquet")) as fh:
        rows = pq.read_table(fh).to_pylist()
    statuses = {r["trial_id"]: r["status"] for r in rows}
    assert statuses == {best["trial_id"]: "finished", bad: "errored"}
    assert {r["trial_id"] for r in rows if r.get("fid") is not None} == {best["trial_id"]}
    assert "NonFiniteLossError" in next(r["error"] for r in rows if r["trial_id"] == bad)
    # One after the other: the diverging trial started once the first had ended.
    assert proc.stderr.index(f"trial {best['trial_id']} epoch 2/2") < proc.stderr.index(f"trial {bad}: ")
    # The console: one ganray line per trial-epoch, Tune's table with params and FID columns,
    # no Ray Train per-worker report dumps.
    assert "Reporting training result" not in proc.stdout + proc.stderr
    assert "optim.d_lr_ratio" in proc.stdout and "best fid" in proc.stdout

    dest = tmp_path / "pulled"
    proc = cli.run("ganray.pull", exp, "--dest", str(dest), "--endpoint-url", s3_endpoint)
    assert proc.returncode == 0, cli.show(proc)
    local = proc.stdout.strip().splitlines()[-1]
    assert local == str(dest / f"epoch_{best['epoch']:04d}.pt") and os.path.getsize(local) > 0
    assert (dest / "config.yaml").exists() and (dest / "pull.json").exists()

    out = tmp_path / "grid.png"
    proc = cli.run("ganray.generate", "--checkpoint", str(dest), "--n", "16", "--out", str(out))
    assert proc.returncode == 0, cli.show(proc)
    with Image.open(out) as im:
        assert im.size == (4 * 34 + 2, 4 * 34 + 2)  # 4x4 grid of 32 px images with 2 px padding
        assert len(set(im.getdata())) > 16  # not a blank image


def test_missing_bucket_fails_before_any_trial(tmp_path, bucket, s3_endpoint, cli, tiny_space):
    space = tiny_space(tmp_path / "space.yaml", [RECIPE], num_samples=1)
    proc = cli.run(
        "ganray.tune",
        "--space",
        space,
        "--storage",
        "s3://no-such-bucket-ganray/x",
        "--endpoint-url",
        s3_endpoint,
        "--address",
        "local",
        timeout=120,
    )
    assert proc.returncode == 2, cli.show(proc)
    assert "cannot write to storage 's3://no-such-bucket-ganray/x/space'" in proc.stderr
    assert "Check that the bucket exists" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr  # failed before Ray (or any trial) started


def test_interrupted_search_resumes_without_repeating_finished_trials(tmp_path, cli, tiny_space):
    space = tiny_space(tmp_path / "space.yaml", [RECIPE], num_samples=2)
    storage_uri = str(tmp_path / "runs")
    args = [
        "-m",
        "ganray.tune",
        "--space",
        space,
        "--storage",
        storage_uri,
        "--name",
        "resume",
        "--address",
        "local",
        "--max-concurrent",
        "1",
        "--set",
        "train.max_steps_per_epoch=8",
    ]
    exp = tmp_path / "runs" / "resume"
    trials_dir = exp / "trials"

    # Run until the first trial has finished and best.json names it, then kill the driver
    # (and with it its local Ray).
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cli.repo, env=cli.env(), stdout=log, stderr=log, start_new_session=True
    )
    deadline = time.time() + 600
    first = None
    while time.time() < deadline and proc.poll() is None:
        done = sorted(trials_dir.glob("*/done.json")) if trials_dir.exists() else []
        if done and (exp / "best.json").exists():
            first = done[0].parent
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    assert first is not None, (tmp_path / "first.log").read_text()[-6000:]
    finished_at = (first / "done.json").stat().st_mtime_ns
    started = {p.name for p in trials_dir.iterdir() if not p.name.startswith("_")}
    assert len(started) <= 2
    # The killed search already names its finished trial, and ganray.pull works on it.
    assert json.loads((exp / "best.json").read_text())["trial_id"] == first.name
    pulled = cli.run("ganray.pull", str(exp), "--dest", str(tmp_path / "pulled"))
    assert pulled.returncode == 0, cli.show(pulled)
    assert os.path.getsize(pulled.stdout.strip().splitlines()[-1]) > 0

    # Same command again: Tuner.restore keeps trial 1 and runs the rest of the search.
    again = subprocess.run(
        [sys.executable, *args], cwd=cli.repo, env=cli.env(), capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, cli.show(again)
    assert "resuming experiment" in again.stderr
    assert "taking over the stale lease" in again.stderr  # the killed driver's (dead pid)
    trials = sorted(p.name for p in trials_dir.iterdir() if not p.name.startswith("_"))
    assert len(trials) == 2 and first.name in trials
    assert (first / "done.json").stat().st_mtime_ns == finished_at  # not trained again
    s = Storage()
    for t in trials:
        epochs = [r["epoch"] for r in artifacts.read_metrics(s, str(trials_dir / t))]
        assert epochs == [1, 2], (t, epochs)  # every epoch exactly once
    best = json.loads((exp / "best.json").read_text())
    assert best["trial_id"] in trials


def test_ctrl_c_ends_the_search_with_exit_3_and_no_traceback(tmp_path, cli, tiny_space):
    space = tiny_space(tmp_path / "space.yaml", [RECIPE], num_samples=1)
    run_dir = tmp_path / "runs" / "ctrl-c"
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganray.tune", "--space", space, "--storage", str(tmp_path / "runs")]
        + ["--name", "ctrl-c", "--address", "local"],
        cwd=cli.repo,
        env=cli.env(),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if list(run_dir.glob("trials/*/config.yaml")):  # the trial is training
                break
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the driver
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    out = (tmp_path / "driver.log").read_text()
    assert code == 3, out[-6000:]
    assert "search interrupted with 1 unfinished trial(s)" in out and "re-run the same command" in out
    assert not (run_dir / SEARCH_LEASE_FILE).exists()  # released: re-running starts at once
    # No traceback from the driver (Ray's own actors may log theirs, prefixed "(Actor pid=...)").
    assert not [ln for ln in out.splitlines() if ln.startswith(("Traceback", "KeyboardInterrupt"))], out[
        -6000:
    ]
