"""Every registered architecture through a short real fit() and an exact resume.

2 epochs in one go must equal 1 epoch, a new Trainer resuming from its
checkpoint, and 1 more epoch: weights, optimizer and scheduler state, RNG
streams and the metrics history, bit for bit.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from ganray.config import load_config
from ganray.models import build_models, list_archs
from ganray.train.loop import Trainer

TIMING = ("epoch_seconds", "images_per_s")  # wall-clock columns differ between runs
# Small-network settings of each family's own config section (model.<family>); a family
# added without an entry here fails test_tiny_networks_are_tiny instead of slowing CI.
TINY = {
    "progan": ["model.progan.network_capacity=2", "model.progan.fmap_max=16"],
    "stylegan": [
        "model.stylegan.network_capacity=2",
        "model.stylegan.fmap_max=16",
        "model.stylegan.w_dim=8",
        "model.stylegan.mapping_layers=2",
    ],
    "stylegan2": [
        "model.stylegan2.network_capacity=2",
        "model.stylegan2.fmap_max=16",
        "model.stylegan2.w_dim=8",
        "model.stylegan2.mapping_layers=2",
    ],
}
MAX_PARAMS = 200_000  # G + D of a tiny config: a few ms per step on CPU


def tiny(root, arch: str, *extra: str):
    """A sub-second epoch on a quiet machine: 200 images, tiny nets, 2 steps of 8 images."""
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
            "data.subset=200",
            "train.batch_size=8",
            "train.max_steps_per_epoch=2",
            "train.epochs=2",
            "train.grid_size=4",
            "train.ema_decay=0.9",
            "schedule.name=exponential",
            "schedule.gamma=0.5",
            "metrics.fid=false",
            *TINY.get(arch, []),
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
def test_tiny_networks_are_tiny(tmp_path, arch):
    G, D = build_models(tiny(tmp_path, arch).model)
    n = sum(p.numel() for net in (G, D) for p in net.parameters())
    assert n < MAX_PARAMS, f"{arch}: {n} parameters; add small settings for it to TINY in {__file__}"


@pytest.mark.parametrize("arch", list_archs())
def test_fit_and_resume_are_exact(tmp_path, arch):
    cfg = tiny(tmp_path / "a", arch)
    straight = Trainer(cfg)
    straight.cfg = tiny(tmp_path / "a", arch, "train.epochs=1")  # stop after epoch 1 ...
    straight.fit()
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # ... keep that run as it was ...
    straight.cfg = cfg
    history = straight.fit()  # ... and go on in the same process to epoch 2
    resumed = Trainer(tiny(tmp_path / "b", arch))  # a new process would resume from epoch 1
    assert resumed.epoch == 1 and resumed.resumed_at == [1]
    resumed.fit()

    assert [r["epoch"] for r in history] == [1, 2]
    assert all(math.isfinite(r[k]) for r in history for k in ("d_loss", "g_loss", "val_d_loss"))
    assert [r["lr_g"] for r in history] == pytest.approx([2e-4, 1e-4])  # exponential, gamma 0.5
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("resumed_at", "config"):  # how each run got there, not where it is
        a.pop(key), b.pop(key)
    assert_equal_tree(a, b)
    # Training moved the generator away from its initialisation (same seed, same build).
    torch.manual_seed(cfg.train.seed)
    init = build_models(cfg.model)[0].state_dict()
    assert any(not torch.equal(t, a["G"][name]) for name, t in init.items())
