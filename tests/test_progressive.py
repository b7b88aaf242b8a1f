"""The progressive schedule maps images seen to (phase, resolution, alpha) as documented."""

import pytest
import torch
import torch.nn.functional as F

from ganray.config import ConfigError, build_config
from ganray.train.progressive import Stage, build_schedule, real_images, resolutions, stage_at, to_full_size

FADE, STABLE = 10, 20  # images


def at(images: int) -> Stage:
    return stage_at(images, 4, 32, FADE, STABLE)


def test_resolutions_and_bad_bounds():
    assert resolutions(4, 32) == [4, 8, 16, 32]
    assert resolutions(8, 8) == [8]
    for start, final in ((3, 32), (4, 48), (64, 32)):
        with pytest.raises(ValueError):
            resolutions(start, final)


def test_phase_zero_then_fade_then_stable():
    assert at(0) == Stage(0, 4, 1.0, 0)
    assert at(STABLE - 1) == Stage(0, 4, 1.0, STABLE - 1)
    # The first image of phase 1: 8 px at alpha exactly 0.
    assert at(STABLE) == Stage(1, 8, 0.0, 0)
    assert at(STABLE + 5) == Stage(1, 8, 0.5, 5)
    assert at(STABLE + FADE - 1).alpha == pytest.approx(0.9)
    assert at(STABLE + FADE - 1).fading
    assert at(STABLE + FADE) == Stage(1, 8, 1.0, FADE)  # fade done: stable part
    assert not at(STABLE + FADE).fading
    assert at(STABLE + FADE + STABLE - 1) == Stage(1, 8, 1.0, FADE + STABLE - 1)
    assert at(STABLE + FADE + STABLE) == Stage(2, 16, 0.0, 0)


def test_last_phase_never_ends():
    start_last = STABLE + 2 * (FADE + STABLE)
    assert at(start_last) == Stage(3, 32, 0.0, 0)
    assert at(start_last + FADE) == Stage(3, 32, 1.0, FADE)
    far = at(10**12)
    assert (far.phase, far.resolution, far.alpha) == (3, 32, 1.0)


def test_no_fade_and_no_growing():
    assert stage_at(20, 4, 32, 0, 20) == Stage(1, 8, 1.0, 0)  # fade 0: switch at once
    assert stage_at(10**6, 32, 32, 10, 20) == Stage(0, 32, 1.0, 10**6)
    with pytest.raises(ValueError, match=">= 0"):
        at(-1)
    with pytest.raises(ValueError):
        stage_at(0, 4, 32, 10, 0)


def _cfg(**progressive):
    return build_config(
        {"model": {"arch": "progan"}, "train": {"progressive": progressive, "batch_size": 16}}
    )


def test_schedule_from_config_and_tables():
    s = build_schedule(
        _cfg(enabled=True, fade_kimg=0.5, stable_kimg=1.0, batch_sizes="4:64, 8:32", lrs="32:1e-3")
    )
    assert (s.start, s.final, s.fade_images, s.stable_images) == (4, 32, 500, 1000)
    assert [s.batch_size(r) for r in (4, 8, 16, 32)] == [64, 32, 16, 16]
    assert s.lr(32) == 1e-3 and s.lr(4) == 2e-4
    assert s.stage(1000 + 250) == Stage(1, 8, 0.5, 250)
    off = build_schedule(_cfg())
    assert off.stage(10**9).resolution == 32 and off.stage(0).alpha == 1.0


def test_the_batch_follows_the_stage_of_the_images_seen():
    s = build_schedule(_cfg(enabled=True, fade_kimg=0.5, stable_kimg=1.0, batch_sizes="4:64,8:32"))
    # 4 px until image 1000; 8 px (fade, then stable) until 2500; 16 px after: train.batch_size (16).
    edges = [(0, 64), (999, 64), (1000, 32), (2499, 32), (2500, 16), (10**9, 16)]
    assert [(n, s.batch_at(n)) for n, _ in edges] == edges


@pytest.mark.parametrize(
    "table, message",
    [
        ("4-64", "is not 'resolution:value'"),
        ("64:8", "not a phase"),
        ("4:8,4:16", "given twice"),
        ("4:0", "positive integer"),
        ("4:2.5", "positive integer"),
        ("4:nan", "positive integer"),
        ("4:10", "batch_sizes: the global batch 10 at 4 px must be divisible by train.workers"),
        # 32 px is missing from the table: train.batch_size (18) applies there, and is named.
        ("4:16,8:16,16:16", "train.batch_size: the global batch 18 at 32 px must be divisible"),
    ],
)
def test_bad_batch_tables_are_named(table, message):
    with pytest.raises(ConfigError, match=message):
        build_config(
            {
                "model": {"arch": "progan"},
                "train": {
                    "workers": 4,
                    "batch_size": 16 if "18" not in message else 18,
                    "progressive": {"enabled": True, "batch_sizes": table},
                },
            }
        )


def test_growing_needs_a_growing_arch():
    with pytest.raises(ConfigError, match="growing architecture"):
        build_config({"train": {"progressive": {"enabled": True}}})
    with pytest.raises(ConfigError, match="start_resolution"):
        _cfg(enabled=True, start_resolution=16)


def test_reals_are_blended_like_fakes():
    x = torch.randn(2, 1, 32, 32)
    x8 = F.avg_pool2d(x, 4)
    assert torch.equal(real_images(x, 8, 1.0), x8)
    low = F.interpolate(F.avg_pool2d(x8, 2), scale_factor=2, mode="nearest")
    assert torch.equal(real_images(x, 8, 0.0), low)
    assert torch.allclose(real_images(x, 8, 0.25), 0.75 * low + 0.25 * x8)
    assert torch.equal(real_images(x, 32), x)
    with pytest.raises(ValueError, match="cannot be reduced"):
        real_images(torch.randn(1, 1, 24, 24), 16)


def test_full_size_is_nearest():
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    up = to_full_size(x, 4)
    assert up.shape == (1, 1, 4, 4) and torch.equal(up[0, 0, :2, :2], torch.zeros(2, 2))
    assert to_full_size(x, 2) is x


def test_new_sections_at_their_defaults_keep_run_names():
    from dataclasses import asdict

    from ganray.config import Config
    from ganray.config_compat import identity

    defaults = asdict(Config())
    ident = identity(build_config({}).to_dict(), defaults)
    assert "progressive" not in ident["train"] and "progan" not in ident["model"]
    grown = identity(_cfg(enabled=True).to_dict(), defaults)
    assert grown["train"]["progressive"] == {"enabled": True}
