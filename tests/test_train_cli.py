"""``python -m ganray.train``: a real run from the command line, and clear errors for bad input."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ganray.storage import Storage, join
from ganray.train import artifacts
from tests.test_checkpoint import write_unsafe_checkpoint


def run_module(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300)


def run_cli(*args):
    return run_module("ganray.train", *args)


def test_cli_trains_and_logs_progress(tmp_path):
    proc = run_cli(
        "--config",
        "quickstart",
        "--storage",
        str(tmp_path),
        "--run-name",
        "cli",
        "--set",
        "data.subset=600",
        "--set",
        "model.ngf=8",
        "--set",
        "model.ndf=8",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=32",
        "--set",
        "metrics.fid=false",
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1 step" in proc.stderr and "img/s" in proc.stderr and "ETA" in proc.stderr
    (summary,) = [line for line in proc.stderr.splitlines() if "epoch 1/1 done: " in line]
    row = artifacts.read_metrics(Storage(), join(str(tmp_path), "cli"))[0]
    assert f"d_loss {row['d_loss']:.3f}, g_loss {row['g_loss']:.3f}" in summary and "FID" not in summary
    assert [r["epoch"] for r in artifacts.read_metrics(Storage(), join(str(tmp_path), "cli"))] == [1]


def test_cli_errors_name_the_problem(tmp_path):
    bad_key = run_cli("--storage", str(tmp_path), "--set", "optim.nmae=adam")
    assert bad_key.returncode != 0 and "optim: unknown key 'nmae'" in bad_key.stderr
    assert "Traceback" not in bad_key.stderr
    no_data = run_cli("--storage", str(tmp_path), "--set", "data.uri=/nonexistent")
    assert no_data.returncode != 0 and "data.uri '/nonexistent' is not a folder" in no_data.stderr
    assert "Traceback" not in no_data.stderr
    blocked = tmp_path / "file"
    blocked.write_text("x")
    no_storage = run_cli("--storage", str(blocked / "runs"))
    assert no_storage.returncode != 0 and "cannot write to storage" in no_storage.stderr


# Every CLI that reads a checkpoint, pointed at one whose unpickling would run code.
UNSAFE_CASES = {
    "train resume": lambda exp, ckpt, out: ("ganray.train", "--storage", exp + "/trials", "--run-name", "t1"),
    "pull": lambda exp, ckpt, out: ("ganray.pull", exp, "--trial", "t1", "--dest", out),
    "generate": lambda exp, ckpt, out: ("ganray.generate", "--checkpoint", ckpt, "--out", out + ".png"),
    "metrics": lambda exp, ckpt, out: ("ganray.metrics", "fid", "--checkpoint", ckpt),
}


@pytest.mark.parametrize("cli", sorted(UNSAFE_CASES))
def test_every_cli_refuses_a_checkpoint_that_would_run_code(tmp_path, cli):
    exp, marker, out = str(tmp_path / "exp"), str(tmp_path / "pwned"), str(tmp_path / "out")
    uri, _ = write_unsafe_checkpoint(Storage(), join(exp, "trials", "t1"), marker)
    proc = run_module(*UNSAFE_CASES[cli](exp, uri, out))
    assert proc.returncode != 0
    assert "was refused" in proc.stderr and "could run code" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(marker)
    assert not os.path.exists(os.path.join(out, "epoch_0001.pt"))  # pull downloads nothing


TINY = (
    "--set",
    "data.subset=600",
    "--set",
    "model.ngf=8",
    "--set",
    "model.ndf=8",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.max_steps_per_epoch=3",
    "--set",
    "metrics.fid=false",
    "--set",
    "train.grid_size=4",
)


def test_all_checkpoints_corrupt_refuses_until_restart_moves_the_run_aside(tmp_path):
    storage, s = str(tmp_path), Storage()
    run = join(storage, "r")
    assert run_cli("--storage", storage, "--run-name", "r", *TINY, "--set", "train.epochs=1").returncode == 0
    ckpt_uri = join(run, "checkpoints", "epoch_0001.pt")
    s.write_bytes(ckpt_uri, b"damaged")
    before = {p: s.read_bytes(join(run, p)) for p in ("metrics.jsonl", "checkpoints/epoch_0001.pt")}
    refused = run_cli("--storage", storage, "--run-name", "r", *TINY, "--set", "train.epochs=2")
    assert (
        refused.returncode == 1 and "none can be loaded" in refused.stderr and "--restart" in refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert {p: s.read_bytes(join(run, p)) for p in before} == before  # every file kept
    restarted = run_cli(
        "--storage", storage, "--run-name", "r", *TINY, "--set", "train.epochs=1", "--restart"
    )
    assert restarted.returncode == 0, restarted.stderr
    (aside,) = os.listdir(tmp_path / "_restarted")
    assert aside.startswith("r-") and "moved the old run" in restarted.stderr
    assert (tmp_path / "_restarted" / aside / "checkpoints" / "epoch_0001.pt").read_bytes() == b"damaged"
    assert [r["epoch"] for r in artifacts.read_metrics(s, run)] == [1]  # a fresh run


def test_a_second_run_on_a_live_run_folder_fails_clearly(tmp_path):
    from tests.test_train_lease import write_lease

    write_lease(Storage(), join(str(tmp_path), "r"))  # this test process is the live first run
    proc = run_cli("--storage", str(tmp_path), "--run-name", "r", *TINY, "--set", "train.epochs=1")
    assert (
        proc.returncode == 1 and "is in use by another run" in proc.stderr and "Traceback" not in proc.stderr
    )
    assert not (tmp_path / "r" / "checkpoints").exists()
    again = run_cli("--storage", str(tmp_path), "--run-name", "r", *TINY, "--restart")
    assert again.returncode == 1 and "is in use by another run" in again.stderr  # a live run is never moved
    assert not (tmp_path / "_restarted").exists()


def test_ctrl_c_exits_130_and_names_the_epoch_it_resumes_from(tmp_path):
    args = ["--storage", str(tmp_path), "--run-name", "r", *TINY, "--set", "train.epochs=500"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganray.train", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    sidecar = tmp_path / "r" / "checkpoints" / "epoch_0001.json"
    deadline = time.time() + 240
    while not sidecar.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    m = re.search(r"interrupted: the run resumes from epoch (\d+) \(checkpoint of epoch (\d+)\)", err)
    assert m and int(m.group(1)) == int(m.group(2)) + 1 >= 2, err
    assert not (tmp_path / "r" / "lease.json").exists()  # released on the way out
    resumed = run_cli(*args[:-2], "--set", f"train.epochs={m.group(1)}")
    assert resumed.returncode == 0 and f"from epoch {m.group(2)}" in resumed.stderr, resumed.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs: real ENOSPC (needs root to mount; CI runs as root)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode
    ):
        pytest.skip("mounting a small tmpfs needs root")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_names_the_path_and_the_run_stays_resumable(small_disk, tmp_path):
    # One checkpoint of this model is ~1.2 MB: the second one does not fit in 2 MB.
    args = ["--storage", str(small_disk), "--run-name", "r", *TINY, "--set", "train.keep_checkpoints=5"]
    proc = run_cli(*args, "--set", "train.epochs=3")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"no space left on the device holding {small_disk}/r/" in proc.stderr
    assert "resumes from epoch 2 (checkpoint of epoch 1)" in proc.stderr
    assert not [f for f in os.listdir(small_disk / "r" / "checkpoints") if "tmp" in f]  # no torn temp files
    shutil.copytree(small_disk / "r", tmp_path / "bigger" / "r")  # free space: move it to a bigger disk
    moved = run_cli(*args, "--storage", str(tmp_path / "bigger"), "--set", "train.epochs=2")
    assert moved.returncode == 0 and "from epoch 1" in moved.stderr, moved.stderr
