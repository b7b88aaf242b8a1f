"""Evaluation inside the training loop: prepared parquet data is scored, and no failure loses an epoch.

- train on shards written by ``ganray.data prepare fashion-mnist`` (the README's
  prepare-then-train path): FID is computed with the offline backbone their
  manifest leads to;
- an evaluation that fails (here: the reference cache cannot be written) is
  recorded in the epoch's row and log, and the epoch's checkpoint is written;
- a backbone the node cannot load fails the run before the epoch trains.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from ganray import checkpoint as ckpt
from ganray.config import load_config
from ganray.data import prepare
from ganray.metrics.backbones import BackboneError, split_pin
from ganray.metrics.classifier import SHIPPED, sidecar_uri
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
    fit(tiny(tmp_path))  # epoch 1 caches the reference statistics
    cache = tmp_path / "runs" / "_cache" / "fid-stats"
    for f in cache.iterdir():
        f.write_bytes(b"not an npz")  # a damaged cache file: epoch 2's evaluation fails reading it
    with caplog.at_level(logging.WARNING, logger="ganray.train"):
        history = fit(tiny(tmp_path, "train.epochs=3"))
    assert [r["epoch"] for r in history] == [1, 2, 3]  # training went on after epoch 2's failure
    assert "fid" in history[0] and all("fid" not in r for r in history[1:])
    assert "reading" in history[1]["eval_error"] and "fid-stats" in history[1]["eval_error"]
    assert "epoch 2: evaluation failed (training goes on)" in caplog.text
    run, s = join(str(tmp_path / "runs"), "run"), Storage()
    assert [c.epoch for c in ckpt.list_checkpoints(s, run)] == [1, 2, 3]
    assert artifacts.read_metrics(s, run)[1]["eval_error"] == history[1]["eval_error"]


def test_an_unwritable_reference_cache_is_a_warning_not_a_lost_score(tmp_path, caplog) -> None:  # noqa: ANN001
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "_cache").write_text("a file where the FID cache folder goes")
    with caplog.at_level(logging.WARNING, logger="ganray.metrics"):
        row = fit(tiny(tmp_path))[-1]
    assert row["fid"] > 0 and "eval_error" not in row
    assert "reference statistics not cached" in caplog.text


def _ddp_eval_worker(rank: int, init: str, out_dir: str) -> None:
    """Rank 1's reference data is missing; both ranks must fail together, then evaluate again."""
    import datetime

    import torch

    from ganray.config import DataConfig, MetricsConfig, ModelConfig
    from ganray.data import build_dataset
    from ganray.metrics import build_backbone, evaluate_generator
    from ganray.metrics.sampling import EvaluationError
    from ganray.models import build_models

    # A short timeout turns a rank left waiting in a mismatched collective into a failure, not a hang.
    torch.distributed.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60)
    )
    try:
        torch.manual_seed(0)
        G, _ = build_models(ModelConfig(ngf=8, ndf=8))
        data = DataConfig(subset=200)
        metrics = MetricsConfig(num_samples=32, batch_size=32)
        backbone = build_backbone("fashion-mnist-classifier")
        real = build_dataset(data)
        kw = {"rank": rank, "world_size": 2, "backbone": backbone}
        broken = DataConfig(source="image-folder", uri=f"{out_dir}/missing")
        try:
            mine, ds = (broken, None) if rank else (data, real)
            evaluate_generator(G, metrics, mine, Storage(), f"{out_dir}/cache", "cpu", dataset=ds, **kw)
            first = "no error"
        except EvaluationError as e:
            first = str(e)
        again = evaluate_generator(G, metrics, data, Storage(), f"{out_dir}/cache", "cpu", dataset=real, **kw)
        with open(f"{out_dir}/rank{rank}.json", "w") as fh:
            json.dump({"first": first, "fid": again["fid"]}, fh)
    finally:
        torch.distributed.destroy_process_group()


def test_an_evaluation_failing_on_one_rank_fails_on_all_and_training_collectives_stay_paired(
    tmp_path,
) -> None:  # noqa: ANN001
    import torch

    torch.multiprocessing.spawn(_ddp_eval_worker, args=(f"file://{tmp_path}/pg", str(tmp_path)), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["first"] == "reference images failed on 1 other rank(s); see their logs"
    assert r1["first"].startswith("reference images: DataError: image-folder")
    assert r0["fid"] == r1["fid"] > 0  # the next evaluation's collectives still pair up


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


SHIPPED_TAG = json.loads(Path(sidecar_uri(str(SHIPPED["fashion-mnist-classifier"]))).read_text())["sha256"][
    :12
]
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
    pinned = load_config(join(run, "config.yaml")).metrics.backbone
    assert split_pin(pinned) == ("fashion-mnist-classifier", SHIPPED_TAG)
    assert [r["fid_backbone"] for r in artifacts.read_metrics(Storage(), run)] == ["fashion-mnist-classifier"]


def test_a_resumed_run_keeps_the_backbone_and_weights_it_started_with(tmp_path) -> None:  # noqa: ANN001
    cfg = load_config("quickstart", [f"storage.uri={tmp_path / 'runs'}"])
    pinned = pin_backbone(cfg)
    assert (
        pinned.metrics.backbone == f"fashion-mnist-classifier@{SHIPPED_TAG}"
        and cfg.metrics.backbone == "auto"
    )
    assert pinned.storage.run_name == run_name_for(cfg)
    # The run started with another classifier: it stays on it instead of switching networks ...
    other = tmp_path / "other.pt"
    shutil.copy(SHIPPED["fashion-mnist-classifier"], other)
    shutil.copy(sidecar_uri(str(SHIPPED["fashion-mnist-classifier"])), sidecar_uri(str(other)))
    config_yaml = join(run_uri_for(pinned), "config.yaml")
    started = load_config(
        "quickstart", [f"storage.uri={tmp_path / 'runs'}", f"metrics.backbone={other}@{SHIPPED_TAG}"]
    )
    Storage().write_text(config_yaml, started.to_yaml())
    assert pin_backbone(cfg).metrics.backbone == f"{other}@{SHIPPED_TAG}"
    # ... and refuses when its weights are no longer the ones it was scored with.
    changed = load_config(
        "quickstart", [f"storage.uri={tmp_path / 'runs'}", f"metrics.backbone={other}@0123456789ab"]
    )
    Storage().write_text(config_yaml, changed.to_yaml())
    with pytest.raises(BackboneError, match="weights 0123456789ab, but the weights here hash to"):
        pin_backbone(cfg)
