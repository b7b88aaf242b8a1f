"""ganray.losses against hand-computed values.

Fixed logits: real = [2, -1], fake = [0.5, -3].
softplus(x) = ln(1 + e^x):
  softplus(-2) = 0.126928   softplus(1)  = 1.313262
  softplus(0.5) = 0.974077  softplus(-3) = 0.048587
  softplus(-0.5) = 0.474077 softplus(3)  = 3.048587
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganray import losses
from ganray.config import ConfigError, TrainConfig

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def close(t: torch.Tensor, value: float) -> None:
    assert t.dim() == 0
    assert t.item() == pytest.approx(value, abs=1e-5)


def test_bce():
    # D: mean(0.126928, 1.313262) + mean(0.974077, 0.048587) = 0.720095 + 0.511332
    close(losses.d_loss("bce", REAL, FAKE), 1.231427)
    # G: mean(softplus(-0.5), softplus(3)) = (0.474077 + 3.048587) / 2
    close(losses.g_loss("bce", FAKE), 1.761332)
    # Same as torch's BCE with logits, real -> 1, fake -> 0.
    bce = nn.functional.binary_cross_entropy_with_logits
    close(losses.d_loss("bce", REAL, FAKE), (bce(REAL, torch.ones(2)) + bce(FAKE, torch.zeros(2))).item())


def test_hinge():
    # D: mean(relu(1-2), relu(1+1)) + mean(relu(1+0.5), relu(1-3)) = mean(0, 2) + mean(1.5, 0)
    close(losses.d_loss("hinge", REAL, FAKE), 1.0 + 0.75)
    # G: -mean(0.5, -3) = 1.25
    close(losses.g_loss("hinge", FAKE), 1.25)


def test_wgan_with_drift():
    cfg = TrainConfig(loss="wgan-gp", drift=1e-3)
    # D: mean(fake) - mean(real) + drift * mean(real^2) = -1.25 - 0.5 + 0.001 * (4 + 1) / 2
    close(losses.d_loss("wgan-gp", REAL, FAKE, cfg), -1.7475)
    close(losses.d_loss("wgan-gp", REAL, FAKE, drift=0.0), -1.75)  # keyword wins over cfg
    close(losses.d_loss("wgan-gp", REAL, FAKE, cfg, drift=0.0), -1.75)
    close(losses.g_loss("wgan-gp", FAKE), 1.25)


def test_drift_ignored_by_other_losses():
    a = losses.d_loss("hinge", REAL, FAKE, drift=0.0)
    b = losses.d_loss("hinge", REAL, FAKE, drift=10.0)
    assert a.item() == b.item()


def test_which_losses_need_gradient_penalty():
    assert losses.needs_gradient_penalty("wgan-gp")
    assert not losses.needs_gradient_penalty("bce")
    assert not losses.needs_gradient_penalty("hinge")


def test_unknown_loss():
    with pytest.raises(ConfigError, match="bce, hinge, wgan-gp"):
        losses.d_loss("lsgan", REAL, FAKE)
    with pytest.raises(ConfigError, match="lsgan"):
        losses.g_loss("lsgan", FAKE)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        losses.LOSSES["mine"] = losses.LOSSES["bce"]


def test_d_accuracy():
    real = torch.tensor([2.0, -1.0, 0.5, 3.0])  # 3 of 4 > 0
    fake = torch.tensor([-1.0, 0.2, 0.3, -5.0])  # 2 of 4 < 0
    acc_real, acc_fake = losses.d_accuracy(real, fake)
    close(acc_real, 0.75)
    close(acc_fake, 0.5)


# ---------------------------------------------------------------- gradient penalty


class LinearD(nn.Module):
    """D(x) = sum(x * u): its input gradient is u everywhere."""

    def __init__(self, u: torch.Tensor):
        super().__init__()
        self.u = nn.Parameter(u)

    def forward(self, x):
        return (x * self.u).flatten(1).sum(1)


def _unit(shape, seed=0):
    u = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


def test_gradient_penalty_zero_for_unit_gradient():
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    D = LinearD(_unit((1, 4, 4)))
    gp = losses.gradient_penalty(D, real, fake, 10.0, generator=torch.Generator().manual_seed(1))
    assert gp.item() == pytest.approx(0.0, abs=1e-8)


def test_gradient_penalty_exact_for_scaled_gradient():
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    D = LinearD(3.0 * _unit((1, 4, 4)))  # ||grad|| = 3 for every image
    gp = losses.gradient_penalty(D, real, fake, 10.0, generator=torch.Generator().manual_seed(1))
    assert gp.item() == pytest.approx(10.0 * (3.0 - 1.0) ** 2, rel=1e-5)
    gp.backward()  # the penalty trains D
    assert D.u.grad is not None and D.u.grad.abs().sum() > 0


def test_gradient_penalty_reproducible_and_positive():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    real, fake = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4, requires_grad=True)

    def gp(seed):
        return losses.gradient_penalty(D, real, fake, 10.0, generator=torch.Generator().manual_seed(seed))

    assert gp(3).item() == gp(3).item()
    assert gp(3).item() != gp(4).item()
    assert gp(3).item() > 0
    gp(3).backward()
    assert fake.grad is None  # no gradient reaches G through the penalty


def test_gradient_penalty_uses_given_alpha():
    real, fake = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    seen = []

    def D(x):
        seen.append(x.detach().clone())
        return x.flatten(1).sum(1)

    alpha = torch.tensor([0.25, 0.75]).view(2, 1, 1, 1)
    losses.gradient_penalty(D, real, fake, 1.0, alpha=alpha)
    # Interpolates alpha * real + (1 - alpha) * fake.
    torch.testing.assert_close(seen[0][:, 0, 0, 0], torch.tensor([0.25, 0.75]))


# ---------------------------------------------------------------- R1 and path length


def test_r1_penalty_equals_the_closed_form_gradient_norm():
    """D(x) = sum(a * x + b * x^2) per image has grad a + 2 b x: R1 by hand."""
    torch.manual_seed(0)
    a, b = torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 2, 3, 3, requires_grad=True)
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    logits = (a * x + b * x.square()).flatten(1).sum(1)
    r1 = losses.r1_penalty(logits, x, gamma=10.0)
    by_hand = (a + 2 * b * x).square().flatten(1).sum(1).mean() * 5.0
    assert torch.allclose(r1, by_hand)
    r1.backward()  # the penalty trains D's parameters
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0


def test_path_lengths_equal_the_jacobian_transpose_by_hand():
    """A linear 'synthesis' img_n = sum_l A_l ws[n, l]: J^T y for layer l is A_l^T y."""
    torch.manual_seed(0)
    n, layers, w_dim, pixels = 3, 4, 5, 6
    A = torch.randn(layers, pixels, w_dim)
    ws = torch.randn(n, layers, w_dim, requires_grad=True)
    img = torch.einsum("lpd,nld->np", A, ws).reshape(n, 1, 2, 3)
    y = torch.randn(n, 1, 2, 3)
    lengths = losses.path_lengths(img, ws, y)
    jty = torch.einsum("lpd,np->nld", A, y.flatten(1))
    assert torch.allclose(lengths, jty.square().sum(2).mean(1).sqrt(), atol=1e-6)
    pen = losses.path_length_penalty(lengths, 0.5, weight=2.0)
    assert torch.allclose(pen, 2.0 * (lengths - 0.5).square().mean())
