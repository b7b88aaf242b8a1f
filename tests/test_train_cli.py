"""``python -m ganray.train``: a real run from the command line, and clear errors for bad input."""

import subprocess
import sys

from ganray.storage import Storage, join
from ganray.train import artifacts


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ganray.train", *args], capture_output=True, text=True, timeout=300
    )


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
