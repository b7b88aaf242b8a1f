"""Progressive growing in the trainer: stages follow images seen, resume mid-fade is bit-exact."""

from __future__ import annotations

import json

import pytest
import torch

from ganray.config import load_config
from ganray.train.loop import Trainer

# Batches of 8, 2 steps per epoch: phase 0 (4 px) is images [0, 8), the 8 px fade is [8, 32).
# Steps start at 0, 8 | 16, 24 | 32, 40: epoch 2 trains mid-fade (alpha 1/3 and 2/3).
FADE_IMAGES, STABLE_IMAGES = 24, 8


def cfg(root, epochs, *extra):
    return load_config(
        "quickstart",
        [
            "model.arch=progan",
            "model.latent_dim=8",
            "model.progan.network_capacity=1",
            "model.progan.fmap_max=8",
            "train.batch_size=8",
            "train.progressive.enabled=true",
            f"train.progressive.fade_kimg={FADE_IMAGES / 1000}",
            f"train.progressive.stable_kimg={STABLE_IMAGES / 1000}",
            f"storage.uri={root}",
            "storage.run_name=run",
            "data.subset=400",
            "train.max_steps_per_epoch=2",
            f"train.epochs={epochs}",
            "train.grid_size=4",
            "metrics.fid=false",
            "train.ema_decay=0.9",
            *extra,
        ],
    )


def test_resume_mid_fade_is_bit_for_bit(tmp_path):
    """3 epochs straight == 1 epoch, restart, 2 more (the restart lands mid-fade)."""
    straight = Trainer(cfg(tmp_path / "a", 3))
    straight.fit()
    Trainer(cfg(tmp_path / "b", 1)).fit()
    resumed = Trainer(cfg(tmp_path / "b", 3))
    assert resumed.epoch == 1
    # Restored from images seen (16): the fade into 8 px, a third done.
    assert (resumed.state.extra["resolution"], resumed.state.extra["alpha"]) == (8, pytest.approx(1 / 3))
    assert unwrap_alpha(resumed) == pytest.approx((1 / 3,) * 3)
    resumed.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("G", "D", "G_ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"
    assert a["extra"] == b["extra"] and a["extra"]["images"] == 48
    # The stage of each epoch's last step: 8 px at alpha 0, 2/3, then 16 px at alpha 0 (images 40).
    rows = [(r["resolution"], r["alpha"]) for r in b["history"]]
    assert rows == [(8.0, 0.0), (8.0, pytest.approx(2 / 3)), (16.0, 0.0)]
    lines = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["resolution"] for line in lines] == [8.0, 8.0, 16.0]


def unwrap_alpha(trainer):
    return trainer.state.G.alpha, trainer.state.D.alpha, trainer.state.G_ema.alpha


def test_samples_are_full_size_at_every_stage(tmp_path):
    t = Trainer(cfg(tmp_path, 1))
    assert t.state.extra["resolution"] == 4
    assert t.sample(2, seed=0).shape == (2, 1, 32, 32)
