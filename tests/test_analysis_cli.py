"""``python -m ganray.analyze`` on a real in-process training run, and on hostile input (subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ganray.analysis.report import build
from ganray.config import load_config
from ganray.train.loop import fit

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ganray.analyze", *args],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A plain-DCGAN ganray.train run: 2 epochs of 256 images, FID on 100 samples."""
    root = tmp_path_factory.mktemp("run")
    sets = ["data.subset=320", "train.epochs=2", "train.batch_size=64", "train.grid_size=16", "model.ngf=8"]
    sets += ["model.ndf=8", "metrics.num_samples=100", "metrics.eval_every=1", f"storage.uri={root}"]
    sets += ["storage.run_name=r1"]
    fit(load_config("quickstart", sets))
    return root / "r1"


def test_a_single_training_run_gets_a_report(run_dir, tmp_path):
    rep = build(str(run_dir), str(tmp_path / "out"))
    assert [t.trial_id for t in rep.experiment.trials] == ["r1"] and rep.best.trial.status == "finished"
    paths = {f.path for f in rep.figures}
    assert {
        "plots/fid_vs_epoch.png",
        "images/progression.gif",
        "images/filters_G.png",
        "images/filters_D.png",
    } <= paths
    assert not any("style_mixing" in p or "truncation" in p for p in paths)  # plain DCGAN: no mapping network
    with Image.open(tmp_path / "out" / "images" / "progression.gif") as gif:
        assert gif.n_frames == 3  # epochs 0, 1, 2
    page = (tmp_path / "out" / "index.html").read_text()
    assert 'id="best-trial">r1<' in page and rep.experiment.problems == []
    assert "http" not in page.replace("http-equiv", "")  # offline: no external resources


def test_rerun_replaces_the_report(run_dir, tmp_path):
    out = tmp_path / "out"
    build(str(run_dir), str(out), with_models=False)
    assert not (out / "images" / "filters_G.png").exists()
    first = (out / "index.html").read_text()
    (run_dir / "samples" / "epoch_0001.png").rename(run_dir / "samples" / "hidden.png")
    try:
        build(str(run_dir), str(out), with_models=False)
    finally:
        (run_dir / "samples" / "hidden.png").rename(run_dir / "samples" / "epoch_0001.png")
    assert (out / "index.html").read_text() != first
    with Image.open(out / "images" / "progression.gif") as gif:
        assert gif.n_frames == 2


def test_hostile_inputs_are_one_line_errors(run_dir, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        ((str(tmp_path / "nope"), "--out", str(tmp_path / "o1")), "holds no experiment"),
        ((str(run_dir), "--out", str(a_file)), "is a file; give a folder"),
        (("s3:/bucket/x", "--out", str(tmp_path / "o2")), "did you mean 's3://bucket/x'"),
        ((str(a_file), "--out", str(tmp_path / "o3")), "holds no experiment"),
        ((str(run_dir),), "the following arguments are required: --out"),
    ]
    for args, message in cases:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()  # nothing written
