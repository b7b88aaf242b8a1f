"""Shared fixtures for the integration tests: a real S3 endpoint (moto's server on loopback),
helpers to run ganray's CLIs in subprocesses (each search starts its own local Ray), free ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# Credentials moto accepts; real AWS settings must never leak into the tests.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def free_ports():
    """Factory: ``free_ports(n)`` -> n distinct free TCP ports on loopback."""

    def pick(n: int) -> list[int]:
        ports: set[int] = set()
        while len(ports) < n:
            ports.add(free_port())
        return sorted(ports)

    return pick


@pytest.fixture(scope="session")
def s3_endpoint():
    """http://127.0.0.1:PORT of a moto S3 server running for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def bucket(s3_endpoint, monkeypatch):
    """A fresh bucket on the moto endpoint; this process's S3 clients are pointed at it."""
    import boto3

    for k, v in FAKE_AWS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    name = f"ganray-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def _cli_env(**extra: str) -> dict[str, str]:
    """Environment for a ganray CLI subprocess: this venv first, fake AWS, no inherited Ray address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(FAKE_AWS)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Cli:
    """Runs ganray's command-line tools in subprocesses from the repo root."""

    repo = REPO
    env = staticmethod(_cli_env)

    @staticmethod
    def run(module: str, *args: str, timeout: float = 900, env: dict[str, str] | None = None):
        """``python -m module args``; return the CompletedProcess (text output captured)."""
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            env=env or _cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    @staticmethod
    def show(proc) -> str:
        """A failed command's exit status and output tails, for assertion messages."""
        return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-8000:]}"


@pytest.fixture()
def cli() -> Cli:
    return Cli()


@pytest.fixture()
def tiny_space():
    """Factory writing a quickstart-like space small enough for a test; returns its path."""
    return _tiny_space


def _tiny_space(path: Path, points: list[dict], num_samples: int, lr_high: float = 1e-3, **tune) -> str:
    """A quickstart-like space small enough for a test (1.2k images, 2 epochs, FID on 500 samples)."""
    import yaml

    space = {
        "base": "quickstart",
        "fixed": {
            "data.subset": 1200,
            "train.epochs": 2,
            "train.batch_size": 64,
            "train.grid_size": 16,
            "train.workers": 1,
            "train.cpus_per_worker": 1,
            "model.ngf": 16,
            "model.ndf": 16,
            "metrics.num_samples": 500,
            "metrics.eval_every": 1,
        },
        "search": {
            "optim.name": {"type": "choice", "values": ["adam", "sgd"]},
            "optim.lr": {"type": "loguniform", "low": 1e-4, "high": lr_high},
            "optim.d_lr_ratio": {"type": "loguniform", "low": 0.5, "high": 10.0},
        },
        "points_to_evaluate": points,
        "tune": {
            "num_samples": num_samples,
            "searcher": {"type": "optuna", "sampler": "tpe", "seed": 0},
            "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
            **tune,
        },
    }
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return str(path)


# --- `ray start --head` clusters for `ray job submit`.


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


def end_session(sid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, every process of the session ``sid`` (which the caller created)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_members(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.time() + grace
        while _session_members(sid) and time.time() < deadline:
            time.sleep(0.5)


@contextlib.contextmanager
def ray_head_cluster(env: dict[str, str], logs: Path) -> Iterator[tuple[str, str]]:
    """A `ray start --head --block` cluster (2 CPUs, dashboard on loopback) run with ``env``;
    yields (dashboard URL, GCS address).

    Every default port (GCS 6379, dashboard 8265, job agent 52365, Ray Client 10001) gets a
    free one: another cluster on this machine holding one makes the job agent fail, and every
    submission is refused with "No available agent". Its own --temp-dir keeps other Ray users
    from finding it; teardown ends only its session's processes (never `ray stop`).
    """
    gcs, dashboard, agent, client = sorted({free_port() for _ in range(8)})[:4]
    temp_dir = f"/tmp/rj-{uuid.uuid4().hex[:8]}"  # short: Ray puts unix sockets under it
    log_path = logs / "ray_head.log"
    cmd = ["ray", "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
           f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]  # fmt: skip
    # Ray Train's placement-group cleaner finds the State API by auto-detection, which
    # fails beside another Ray (README, "Several Ray clusters on one machine").
    env = {**env, "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}"}
    with open(log_path, "w") as log:
        head = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.time() + 120
            while "This command will now block" not in log_path.read_text():
                assert head.poll() is None, log_path.read_text()[-4000:]
                assert time.time() < deadline, "ray start --head did not come up in 120 s"
                time.sleep(1)
            yield f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}"
        finally:
            end_session(head.pid)
            head.wait(timeout=30)
            shutil.rmtree(temp_dir, ignore_errors=True)


def submit_job(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900):
    """Run a `ray job submit ...` command; returns the CompletedProcess.

    The head's job agent comes up a little after `ray start` returns; until then the
    submission is refused before any job exists, so retrying it is safe.
    """
    deadline = time.time() + 180
    while True:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 or "No available agent" not in proc.stderr or time.time() > deadline:
            return proc
        time.sleep(3)
