"""Adversarial losses as small pure functions, plus a read-only registry.

Every function takes discriminator logits (any shape, usually ``[N]``) and
returns a scalar to *minimize*. ``d_loss`` / ``g_loss`` look a loss up by the
name in ``TrainConfig.loss``; ``needs_gradient_penalty`` tells the training
step whether to add ``gradient_penalty`` to the D loss.

Regularizers with their own schedule (lazy R1, path length; ROADMAP) belong
in a separate registry of their own: they need D/G and inputs, not logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F

from ganray.config import ConfigError, TrainConfig

Tensor = torch.Tensor


# ---------------------------------------------------------------- the losses


def d_nonsaturating(real: Tensor, fake: Tensor) -> Tensor:
    """BCE with logits, real -> 1, fake -> 0: softplus(-real) + softplus(fake), as means."""
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_nonsaturating(fake: Tensor) -> Tensor:
    """Non-saturating G loss (DCGAN): -log sigmoid(fake) = softplus(-fake), mean."""
    return F.softplus(-fake).mean()


def d_hinge(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge D loss: relu(1 - real) + relu(1 + fake), as means."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_hinge(fake: Tensor) -> Tensor:
    """Hinge G loss: -fake, mean."""
    return -fake.mean()


def d_wasserstein(real: Tensor, fake: Tensor, drift: float = 0.0) -> Tensor:
    """WGAN critic loss fake - real, plus ``drift`` * real^2 (keeps logits near 0, Karras et al. 2018)."""
    return fake.mean() - real.mean() + drift * real.pow(2).mean()


def g_wasserstein(fake: Tensor) -> Tensor:
    """WGAN G loss: -fake, mean."""
    return -fake.mean()


def gradient_penalty(
    D: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    weight: float,
    generator: torch.Generator | None = None,
    alpha: Tensor | None = None,
) -> Tensor:
    """WGAN-GP: ``weight`` * mean over images of (||grad_x D(x)||_2 - 1)^2.

    x are random interpolates alpha * real + (1 - alpha) * fake, alpha ~ U[0, 1)
    per image, drawn from ``generator`` (reproducible) unless ``alpha``
    ``[N, 1, 1, 1]`` is given (the distributed step draws it for the global
    batch). The graph is kept so the penalty trains D; no gradient reaches G.
    Per-image gradients are only meaningful when D has no BatchNorm.
    """
    n = real.shape[0]
    if alpha is None:
        device = generator.device if generator is not None else real.device
        alpha = torch.rand((n,) + (1,) * (real.dim() - 1), generator=generator, device=device)
    alpha = alpha.to(device=real.device, dtype=real.dtype)
    x = torch.lerp(fake.detach(), real.detach(), alpha).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return weight * (norms - 1.0).pow(2).mean()


def d_accuracy(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """(fraction of real logits > 0, fraction of fake logits < 0) as 0-dim tensors.

    Tensors, not floats, so a training step does not force a device sync.
    """
    with torch.no_grad():
        return (real > 0).float().mean(), (fake < 0).float().mean()


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class AdversarialLoss:
    """A D/G loss pair; ``d`` takes (real, fake, drift)."""

    d: Callable[[Tensor, Tensor, float], Tensor]
    g: Callable[[Tensor], Tensor]
    gradient_penalty: bool = False


LOSSES = MappingProxyType(
    {
        "bce": AdversarialLoss(lambda r, f, drift: d_nonsaturating(r, f), g_nonsaturating),
        "hinge": AdversarialLoss(lambda r, f, drift: d_hinge(r, f), g_hinge),
        "wgan-gp": AdversarialLoss(d_wasserstein, g_wasserstein, gradient_penalty=True),
    }
)


def get_loss(name: str) -> AdversarialLoss:
    """The registered loss ``name``, or a ConfigError listing the known ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"train.loss: unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None


def d_loss(
    name: str,
    real_logits: Tensor,
    fake_logits: Tensor,
    cfg: TrainConfig | None = None,
    *,
    drift: float | None = None,
) -> Tensor:
    """Discriminator loss ``name`` (without the gradient penalty).

    The drift weight (wgan-gp only) comes from ``drift`` if given, else from
    ``cfg.drift``, else 0.
    """
    if drift is None:
        drift = cfg.drift if cfg is not None else 0.0
    return get_loss(name).d(real_logits, fake_logits, drift)


def g_loss(name: str, fake_logits: Tensor) -> Tensor:
    """Generator loss ``name``."""
    return get_loss(name).g(fake_logits)


def needs_gradient_penalty(name: str) -> bool:
    """True if loss ``name`` expects ``gradient_penalty`` added to the D loss."""
    return get_loss(name).gradient_penalty


# ---------------------------------------------------------------- lazy regularizers (StyleGAN2)


def r1_penalty(real_logits: Tensor, real: Tensor, gamma: float) -> Tensor:
    """R1 (Mescheder et al. 2018): ``gamma / 2`` * mean over images of ||grad_x D(x)||^2 on reals.

    ``real`` must require grad and ``real_logits`` be D's output on it (after
    any augmentation). The graph is kept so the penalty trains D.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean() * (gamma / 2)


def path_lengths(images: Tensor, ws: Tensor, pl_noise: Tensor) -> Tensor:
    """Per-image path length ``[N]``: ||J_w^T y||, y = ``pl_noise`` (N(0,1) / sqrt(H*W)).

    ``ws`` [N, num_ws, w_dim] are the styles ``images`` were made from; the
    squared gradient is summed over w_dim and averaged over layers (NVlabs).
    """
    (grad,) = torch.autograd.grad((images * pl_noise).sum(), ws, create_graph=True)
    return grad.square().sum(2).mean(1).sqrt()


def path_length_penalty(lengths: Tensor, pl_mean: Tensor | float, weight: float) -> Tensor:
    """``weight`` * mean of (length - pl_mean)^2: keeps |J_w^T y| constant over W (StyleGAN2)."""
    return (lengths - pl_mean).square().mean() * weight
