"""Every registered architecture through a short real fit() and an exact resume.

2 epochs in one go must equal 1 epoch, a new Trainer resuming from its
checkpoint, and 1 more epoch: weights, optimizer and scheduler state, RNG
streams and the metrics history, bit for bit.
"""

from __future__ import annotations

import math

import pytest
import torch

from ganray.config import load_config
from ganray.models import list_archs
from ganray.train.loop import Trainer

TIMING = ("epoch_seconds", "images_per_s")  # wall-clock columns differ between runs


def tiny(root, arch: str, *extra: str):
    """A ~1 s run per epoch: 320 images, 8-channel nets, 3 steps of 16 images."""
    return load_config(
        "quickstart",
        [
            f"storage.uri={root}",
            "storage.run_name=run",
            f"model.arch={arch}",
            "model.ngf=8",
            "model.ndf=8",
            "model.latent_dim=16",
            "model.mapping_layers=2",
            "data.subset=320",
            "train.batch_size=16",
            "train.max_steps_per_epoch=3",
            "train.epochs=2",
            "train.grid_size=4",
            "train.ema_decay=0.9",
            "schedule.name=exponential",
            "schedule.gamma=0.5",
            "metrics.fid=false",
            *extra,
        ],
    )


def assert_equal_tree(a, b, path: str = "") -> None:
    """Nested dicts/lists/tuples of tensors, arrays and numbers are exactly equal."""
    assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            if k not in TIMING:
                assert_equal_tree(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif hasattr(a, "shape"):  # numpy arrays (numpy's RNG state)
        assert (a == b).all(), f"{path} differs"
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.mark.parametrize("arch", list_archs())
def test_fit_and_resume_are_exact(tmp_path, arch):
    straight = Trainer(tiny(tmp_path / "a", arch))
    history = straight.fit()
    first = Trainer(tiny(tmp_path / "b", arch, "train.epochs=1"))
    first.fit()
    resumed = Trainer(tiny(tmp_path / "b", arch))
    assert resumed.epoch == 1 and resumed.resumed_at == [1]
    resumed.fit()

    assert [r["epoch"] for r in history] == [1, 2]
    assert all(math.isfinite(r[k]) for r in history for k in ("d_loss", "g_loss", "val_d_loss"))
    assert [r["lr_g"] for r in history] == pytest.approx([2e-4, 1e-4])  # exponential, gamma 0.5
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("resumed_at", "config"):  # how each run got there, not where it is
        a.pop(key), b.pop(key)
    assert_equal_tree(a, b)
    # The trained generator moved away from its initialisation.
    init = Trainer(tiny(tmp_path / "c", arch)).state_dict()["G"]
    assert any(not torch.equal(t, a["G"][name]) for name, t in init.items())
