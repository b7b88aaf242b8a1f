"""``ray job submit`` of the quickstart search against a running cluster (a `ray start --head` on loopback).

The cluster runs with token authentication (RAY_AUTH_MODE=token): the test gives
the head and the job CLI one token through RAY_AUTH_TOKEN, as the README tells
users to do with `ray get-auth-token`, without writing ~/.ray. The head is
conftest's `ray_head_cluster` (own ports and --temp-dir, torn down without
`ray stop`).

The submitted search runs two trials one after the other under ASHA: before the
fix, the second trial failed to re-use the first one's actor ("Could not re-use
actor ... reset_config()") and the search then waited for ever.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess

import pyarrow.parquet as pq
import pytest
from conftest import ray_head_cluster, submit_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A `ray start --head --block` cluster (2 CPUs, token auth, dashboard on loopback).

    Yields (dashboard URL, GCS address, environment for the Ray CLIs with its token)."""
    from conftest import Cli  # module scope: the function-scoped fixtures can't serve

    env = Cli.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    with ray_head_cluster(env, tmp_path_factory.mktemp("head")) as (url, gcs):
        yield url, gcs, env


def test_ray_job_submit_runs_two_trials_in_sequence(ray_head, cli, tmp_path):
    url, _, env = ray_head
    env = dict(env)
    env.pop("PYTHONPATH")  # the job must import ganray from its uploaded working dir
    token = subprocess.run(["ray", "get-auth-token"], env=env, capture_output=True, text=True, timeout=60)
    assert token.returncode == 0 and token.stdout.strip() == env["RAY_AUTH_TOKEN"], token.stderr
    storage = tmp_path / "searches"
    cmd = [
        "ray",
        "job",
        "submit",
        "--address",
        url,
        "--working-dir",
        ".",
        "--runtime-env",
        "cluster/runtime_env.yaml",
        "--",
        "python",
        "-m",
        "ganray.tune",
        "--space",
        "tune_spaces/quickstart.yaml",
        "--storage",
        str(storage),
        "--num-samples",
        "2",
        *("--set", "data.subset=1200", "--set", "train.epochs=2", "--set", "train.max_steps_per_epoch=4"),
        *("--set", "metrics.num_samples=500", "--set", "train.grid_size=16"),
    ]
    proc = submit_job(cmd, cwd=cli.repo, env=env)
    assert proc.returncode == 0 and "succeeded" in proc.stdout, cli.show(proc)
    out = proc.stdout + proc.stderr
    assert "Could not re-use actor" not in out
    exp = storage / "quickstart"
    with open(exp / "results.parquet", "rb") as fh:
        rows = pq.read_table(fh).to_pylist()
    statuses = {r["trial_id"]: r["status"] for r in rows}
    assert len(statuses) == 2 and set(statuses.values()) <= {"finished", "stopped"}, statuses
    started = sorted((exp / "trials" / t / "config.yaml").stat().st_mtime for t in statuses)
    ended = sorted((exp / "trials" / t / "metrics.jsonl").stat().st_mtime for t in statuses)
    assert ended[0] <= started[1]  # one after the other (2 CPUs, 2 workers a trial)
    best = json.loads((exp / "best.json").read_text())
    assert best["trial_id"] in statuses and best["epoch"] in (1, 2) and best["best_fid"] > 0
    assert os.path.exists(best["checkpoint_uri"])
    # The console: ganray's one line per trial-epoch and Tune's table with the searched
    # params and FID columns; not Ray Train's per-worker report dumps.
    assert "Reporting training result" not in out
    assert out.count("epoch 2/2: fid") == 2
    assert "optim.lr" in out and "best fid" in out


def test_address_local_starts_a_new_ray_beside_a_running_cluster(ray_head, cli, tiny_space, tmp_path):
    """--address local never joins the running cluster, though RAY_ADDRESS names it; a search
    whose only trial diverges (NaN) ends with exit 1: no trial evaluated."""
    _, gcs, env = ray_head
    diverges = {"optim.name": "sgd", "optim.lr": 1.0, "optim.d_lr_ratio": 10.0}
    space = tiny_space(tmp_path / "space.yaml", [diverges], num_samples=1, lr_high=1.0)
    args = ["--space", space, "--storage", str(tmp_path / "runs"), "--address", "local"]
    proc = cli.run("ganray.tune", *args, env={**env, "RAY_ADDRESS": gcs})
    assert proc.returncode == 1, cli.show(proc)
    assert "Started a local Ray instance" in proc.stderr
    assert "Connecting to existing Ray cluster" not in proc.stderr
    assert "no trial produced fid" in proc.stderr and "NonFiniteLossError" in proc.stdout
