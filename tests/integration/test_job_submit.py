"""``ray job submit`` of the quickstart search against a running cluster (a `ray start --head` on loopback).

The cluster runs with token authentication (RAY_AUTH_MODE=token): the test gives
the head and the job CLI one token through RAY_AUTH_TOKEN, as the README tells
users to do with `ray get-auth-token`, without writing ~/.ray. It gets its own
--temp-dir, so other Ray users on this machine neither find it (address="auto")
nor get stopped with it: teardown ends only the processes in the session the
test started (no `ray stop`, which would stop every Ray cluster on the machine).

The submitted search runs two trials one after the other under ASHA: before the
fix, the second trial failed to re-use the first one's actor ("Could not re-use
actor ... reset_config()") and the search then waited for ever.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration


def _session_members(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ..., session id (fields 3 and 6)
            pids.append(int(entry))
    return pids


def _end_session(sid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, every process of the session ``sid`` (which this test created)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_members(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + grace
        while _session_members(sid) and time.time() < deadline:
            time.sleep(0.5)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A `ray start --head --block` cluster (2 CPUs, token auth, dashboard on loopback).

    Yields (dashboard URL, GCS address, environment for the Ray CLIs with its token)."""
    from conftest import Cli, free_port  # module scope: the function-scoped fixtures can't serve

    # Every fixed default port (GCS 6379, dashboard 8265, its agent 52365, Ray Client 10001)
    # gets a free one: another cluster on this machine would make the head's job agent fail.
    gcs_port, dash_port, agent_port, client_port = sorted({free_port() for _ in range(8)})[:4]
    temp_dir = f"/tmp/rj-{uuid.uuid4().hex[:8]}"  # short: Ray puts unix sockets under it
    logs = tmp_path_factory.mktemp("head")
    env = Cli.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    log = open(logs / "ray_head.log", "w")  # noqa: SIM115 - closed in teardown
    head = subprocess.Popen(
        [
            "ray",
            "start",
            "--head",
            "--block",
            f"--port={gcs_port}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash_port}",
            f"--dashboard-agent-listen-port={agent_port}",
            f"--ray-client-server-port={client_port}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        cwd=Cli.repo,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert head.poll() is None, (logs / "ray_head.log").read_text()[-4000:]
            if "This command will now block" in (logs / "ray_head.log").read_text():
                break
            time.sleep(1)
        else:
            pytest.fail("ray start --head did not come up in 120 s")
        yield f"http://127.0.0.1:{dash_port}", f"127.0.0.1:{gcs_port}", env
    finally:
        _end_session(head.pid)
        head.wait(timeout=30)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


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
    # The head's job agent comes up a little after `ray start` returns; until then the
    # submission is refused before any job exists, so retrying it is safe.
    deadline = time.time() + 180
    while True:
        proc = subprocess.run(cmd, cwd=cli.repo, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode == 0 or "No available agent" not in proc.stderr or time.time() > deadline:
            break
        time.sleep(3)
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
