"""Evaluation inside the training loop: prepared parquet data is scored, and no failure loses an epoch.

- train on shards written by ``ganray.data prepare fashion-mnist`` (the README's
  prepare-then-train path): FID is computed with the offline backbone their
  manifest leads to;
- an evaluation that fails (here: the reference cache cannot be written) is
  recorded in the epoch's row and log, and the epoch's checkpoint is written;
- a backbone the node cannot load fails the run before the epoch trains.
"""

from __future__ import annotations

import logging

import pytest

from ganray import checkpoint as ckpt
from ganray.config import load_config
from ganray.data import prepare
from ganray.metrics.backbones import BackboneError
from ganray.storage import Storage, join
from ganray.train import artifacts
from ganray.train.cli import main as train_main
from ganray.train.cli import pin_backbone
from ganray.train.loop import Trainer, fit, run_name_for, run_uri_for


def tiny(tmp_path, *extra: str):  # noqa: ANN001, ANN201
    """A seconds-long run with FID on 64 samples every epoch."""
    return load_config(
        "quickstart",
        [
            f"storage.uri={tmp_path / 'runs'}",
            "storage.run_name=run",
            "data.subset=600",
            "model.ngf=8",
            "model.ndf=8",
            "train.batch_size=32",
            "train.max_steps_per_epoch=3",
            "train.epochs=1",
            "train.grid_size=4",
            "metrics.num_samples=64",
            "metrics.batch_size=64",
            "metrics.eval_every=1",
            *extra,
        ],
    )


@pytest.fixture(autouse=True)
def no_inception_weights(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """auto resolves to the offline backbone, whatever this machine's hub cache holds."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-hub-cache"))


def test_training_on_prepared_fashion_parquet_is_scored(tmp_path) -> None:  # noqa: ANN001
    shards = str(tmp_path / "fmnist-32")
    prepare("fashion-mnist", shards, 32, limit=600, log=lambda _: None)
    history = fit(tiny(tmp_path, "data.source=parquet", f"data.uri={shards}"))
    row = history[-1]
    assert "eval_error" not in row, row
    assert row["fid_backbone"] == "fashion-mnist-classifier" and row["fid"] > 0
    assert row["fid_label"] == "FID [fashion-mnist-classifier]"
    run = join(str(tmp_path / "runs"), "run")
    assert [c.epoch for c in ckpt.list_checkpoints(Storage(), run)] == [1]


def test_a_failed_evaluation_keeps_the_epoch_and_says_why(tmp_path, caplog) -> None:  # noqa: ANN001
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "_cache").write_text("a file where the FID cache folder goes")
    with caplog.at_level(logging.WARNING, logger="ganray.train"):
        history = fit(tiny(tmp_path, "train.epochs=2"))
    assert [r["epoch"] for r in history] == [1, 2]  # training went on after epoch 1's failure
    assert all("fid" not in r and r["eval_error"] for r in history)
    assert "evaluation failed (training goes on)" in caplog.text
    run, s = join(str(tmp_path / "runs"), "run"), Storage()
    assert [c.epoch for c in ckpt.list_checkpoints(s, run)] == [1, 2]
    stored = artifacts.read_metrics(s, run)
    assert [r["epoch"] for r in stored] == [1, 2] and stored[0]["eval_error"] == history[0]["eval_error"]


def test_a_backbone_this_node_cannot_load_fails_before_the_epoch_trains(tmp_path) -> None:  # noqa: ANN001
    first = Trainer(tiny(tmp_path, "metrics.fid=false"))
    first.fit()
    missing = str(tmp_path / "elsewhere" / "classifier.pt")
    later = Trainer(tiny(tmp_path, "train.epochs=2", f"metrics.backbone={missing}"))
    assert later.epoch == 1
    with pytest.raises(BackboneError, match=r"metrics.backbone=.*classifier.pt.*cannot load it"):
        later.fit()
    assert later.images_seen == first.images_seen  # nothing trained, nothing lost
    run = join(str(tmp_path / "runs"), "run")
    assert [c.epoch for c in ckpt.list_checkpoints(Storage(), run)] == [1]


TINY_SETS = {
    "data.subset": 600,
    "model.ngf": 8,
    "model.ndf": 8,
    "train.batch_size": 32,
    "train.max_steps_per_epoch": 2,
    "train.grid_size": 4,
    "train.epochs": 1,
    "metrics.num_samples": 64,
}


def test_ganray_train_pins_auto_to_a_concrete_backbone(tmp_path) -> None:  # noqa: ANN001
    sets = [f"{k}={v}" for k, v in TINY_SETS.items()] + [f"storage.uri={tmp_path / 'runs'}"]
    train_main([arg for s in sets for arg in ("--set", s)])
    as_given = load_config("quickstart", sets)
    run = join(str(tmp_path / "runs"), run_name_for(as_given))  # named from the config as the user gave it
    assert as_given.metrics.backbone == "auto"
    assert load_config(join(run, "config.yaml")).metrics.backbone == "fashion-mnist-classifier"
    assert [r["fid_backbone"] for r in artifacts.read_metrics(Storage(), run)] == ["fashion-mnist-classifier"]


def test_a_resumed_run_keeps_the_backbone_it_started_with(tmp_path) -> None:  # noqa: ANN001
    cfg = load_config("quickstart", [f"storage.uri={tmp_path / 'runs'}"])
    pinned = pin_backbone(cfg)
    assert pinned.metrics.backbone == "fashion-mnist-classifier" and cfg.metrics.backbone == "auto"
    assert pinned.storage.run_name == run_name_for(cfg)
    # The run started where Inception weights were present: it stays on Inception, or fails
    # where they are missing, instead of switching to another network mid-run.
    started = load_config("quickstart", [f"storage.uri={tmp_path / 'runs'}", "metrics.backbone=inception"])
    Storage().write_text(join(run_uri_for(pinned), "config.yaml"), started.to_yaml())
    assert pin_backbone(cfg).metrics.backbone == "inception"
