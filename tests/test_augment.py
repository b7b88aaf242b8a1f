"""DiffAugment ops and ADA's adaptive probability."""

import pytest
import torch

from ganray import augment
from ganray.config import ConfigError

ALL = ("color", "translation", "cutout")


def _u(n, seed=0):
    return torch.rand(n, augment.NUM_RANDOMS, generator=torch.Generator().manual_seed(seed))


def test_strength_zero_is_the_identity():
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(augment.diff_augment(x, ALL, 0.0, _u(4)), x)
    assert torch.equal(augment.diff_augment(x, (), 1.0, _u(4)), x)


@pytest.mark.parametrize("op", ALL)
def test_each_op_changes_images_and_is_differentiable(op):
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    y = augment.diff_augment(x, (op,), 1.0, _u(4))
    assert y.shape == x.shape and not torch.allclose(y, x)
    (g,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), x)
    assert g.abs().sum() > 0


def test_translation_shifts_by_whole_pixels_with_zero_fill():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    u = torch.zeros(1, augment.NUM_RANDOMS)
    u[0, 6], u[0, 7] = 0.99, 0.5  # 8 px side, ratio 1/8: dy = +1, dx = 0
    y = augment.translation(x, u, 1.0)
    assert torch.equal(y[0, 0, 1:], x[0, 0, :-1]) and torch.equal(y[0, 0, 0], torch.zeros(8))


def test_cutout_zeroes_a_square_of_half_the_side():
    x = torch.ones(1, 1, 8, 8)
    u = torch.zeros(1, augment.NUM_RANDOMS)
    u[0, 9] = u[0, 10] = 0.5  # centre (4, 4): rows/cols 2..5
    y = augment.cutout(x, u, 1.0)
    assert y.sum() == 64 - 16 and y[0, 0, 2:6, 2:6].sum() == 0


def test_policy_parsing_names_the_bad_op():
    assert augment.parse_policy(" color, cutout ") == ("color", "cutout")
    assert augment.parse_policy("") == ()
    with pytest.raises(ConfigError, match="'flip'"):
        augment.parse_policy("color,flip")


def test_ada_p_rises_when_d_overfits_and_falls_otherwise():
    p = 0.0
    for _ in range(10):  # synthetic r_t: D sure of every real
        p = augment.ada_adjust(p, rt=0.9, target=0.6, images=4 * 64, ada_kimg=10.0)
    assert p == pytest.approx(10 * 256 / 10_000)
    p = augment.ada_adjust(p, rt=0.2, target=0.6, images=256, ada_kimg=10.0)
    assert p == pytest.approx(9 * 256 / 10_000)
    assert augment.ada_adjust(1.0, 0.9, 0.6, 10**6, 1.0) == 1.0
    assert augment.ada_adjust(0.0, 0.1, 0.6, 10**6, 1.0) == 0.0
