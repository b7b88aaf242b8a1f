"""``ray job submit`` of the quickstart search against a running cluster (a `ray start --head` on loopback).

Ray >= 2.59 turns token authentication on for local clusters, so the job CLI
needs RAY_AUTH_TOKEN (printed by `ray get-auth-token`); the test does what the
README tells users to do. The cluster gets its own --temp-dir, so other Ray
users on this machine neither find it (address="auto") nor get stopped with it:
teardown ends only the processes in the session the test started (no
`ray stop`, which would stop every Ray cluster on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

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


@pytest.fixture()
def ray_head(cli, free_ports, tmp_path):
    """A `ray start --head --block` cluster (2 CPUs, dashboard on loopback); yields the dashboard URL."""
    gcs_port, dash_port = free_ports(2)
    temp_dir = f"/tmp/rj-{uuid.uuid4().hex[:8]}"  # short: Ray puts unix sockets under it
    log = open(tmp_path / "ray_head.log", "w")  # noqa: SIM115 - closed in teardown
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
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        cwd=cli.repo,
        env=cli.env(),
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash_port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert head.poll() is None, (tmp_path / "ray_head.log").read_text()[-4000:]
            if "This command will now block" in (tmp_path / "ray_head.log").read_text():
                break
            time.sleep(1)
        else:
            pytest.fail("ray start --head did not come up in 120 s")
        yield url
    finally:
        _end_session(head.pid)
        head.wait(timeout=30)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_quickstart_search(ray_head, cli, tmp_path):
    env = cli.env()
    env.pop("PYTHONPATH")  # the job must import ganray from its uploaded working dir
    token = subprocess.run(["ray", "get-auth-token"], env=env, capture_output=True, text=True, timeout=60)
    assert token.returncode == 0, token.stderr
    # The job CLI sends the token only in token mode (it does not detect it the way `ray start` does).
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token.stdout.strip())
    storage = tmp_path / "searches"
    cmd = [
        "ray",
        "job",
        "submit",
        "--address",
        ray_head,
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
        "1",
        "--set",
        "data.subset=1200",
        "--set",
        "train.epochs=2",
        "--set",
        "metrics.num_samples=500",
        "--set",
        "train.grid_size=16",
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
    best = json.loads((storage / "quickstart" / "best.json").read_text())
    assert best["epoch"] in (1, 2) and best["best_fid"] > 0
    assert os.path.exists(best["checkpoint_uri"])
