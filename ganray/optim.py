"""Optimizers, learning-rate schedules and gradient clipping for G and D.

G and D get the same kind of optimizer with separate learning rates: D's is
``lr * d_lr_ratio`` (the two time-scale update rule, TTUR, when the ratio is
not 1). Schedules are stepped once per epoch.

All schedulers built here are "chainable": each step multiplies the
optimizer's *current* learning rate. ``set_lr`` can therefore put new rates
into live optimizers (Population Based Training, ROADMAP) and the schedule
carries on from them without rebuilding anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim import lr_scheduler

from ganray.config import ConfigError, OptimConfig, RegConfig, ScheduleConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """One optimizer of kind ``cfg.name`` at learning rate ``lr``.

    - adam: betas (beta1, beta2); weight_decay is coupled L2 (Adam, not AdamW).
    - rmsprop: momentum = ``cfg.momentum`` as configured (torch's default is 0;
      the config documents momentum as an rmsprop knob, so it is honoured
      rather than silently ignored, and a search over it means something).
      For WGAN-style RMSprop set ``optim.momentum=0``.
    - sgd: momentum = ``cfg.momentum`` (0 = plain SGD).
    - nesterov: SGD with Nesterov momentum; needs momentum > 0.
    """
    params = [p for p in params if p.requires_grad]
    wd = cfg.weight_decay
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), weight_decay=wd)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.name == "nesterov":
        if cfg.momentum <= 0:
            raise ConfigError(f"optim.momentum: nesterov needs momentum > 0, got {cfg.momentum}")
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=True, weight_decay=wd)
    raise ConfigError(
        f"optim.name: unknown optimizer {cfg.name!r}; choose one of: adam, rmsprop, sgd, nesterov"
    )


def build_optimizers(
    G: nn.Module, D: nn.Module, cfg: OptimConfig, reg: RegConfig | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """``(opt_g, opt_d)``: G at ``cfg.lr``, D at ``cfg.lr * cfg.d_lr_ratio`` (TTUR).

    With lazy regularization phases in ``reg`` (path length for G, R1 for D)
    each optimizer gets the lazy-regularization correction (``lazy_corrected``).
    """
    g_cfg, d_cfg = cfg, cfg
    if reg is not None and reg.pl_weight > 0:
        g_cfg = lazy_corrected(cfg, reg.pl_interval)
    if reg is not None and reg.r1_gamma > 0:
        d_cfg = lazy_corrected(cfg, reg.r1_interval)
    return build_optimizer(G.parameters(), g_cfg, g_cfg.lr), build_optimizer(
        D.parameters(), d_cfg, d_lr(d_cfg)
    )


def lazy_corrected(cfg: OptimConfig, interval: int) -> OptimConfig:
    """lr * c and Adam betas ** c, c = interval / (interval + 1) (StyleGAN2's lazy regularization).

    A regularizer every ``interval`` minibatches adds one optimizer step per
    ``interval`` main steps; scaling lr and the betas by c keeps the
    optimizer's effective step size and momentum horizon per minibatch as
    without the extra steps (interval 1: the regularizer steps every minibatch, c = 1/2).
    """
    c = interval / (interval + 1)
    return dataclasses.replace(cfg, lr=cfg.lr * c, beta1=cfg.beta1**c, beta2=cfg.beta2**c)


def d_lr(cfg: OptimConfig) -> float:
    """The discriminator's learning rate under TTUR."""
    return cfg.lr * cfg.d_lr_ratio


def build_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int) -> lr_scheduler.LRScheduler:
    """Per-epoch schedule; after k epochs (k steps) the rate is, for initial rate lr:

    - none: lr (a MultiplicativeLR by 1, so the trainer always has a scheduler).
    - step: lr * gamma ** (k // step_size).
    - exponential: lr * gamma ** k.
    - cosine: eta_min + (lr - eta_min) * (1 + cos(pi * k / epochs)) / 2,
      eta_min = lr * min_lr_ratio.
    """
    if cfg.name == "none":
        return lr_scheduler.MultiplicativeLR(opt, lr_lambda=_constant)
    if cfg.name == "step":
        return lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "exponential":
        return lr_scheduler.ExponentialLR(opt, gamma=cfg.gamma)
    if cfg.name == "cosine":
        # eta_min is absolute in torch; all groups of one optimizer share one lr here.
        eta_min = opt.param_groups[0]["lr"] * cfg.min_lr_ratio
        return lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1), eta_min=eta_min)
    raise ConfigError(
        f"schedule.name: unknown scheduler {cfg.name!r}; choose one of: none, step, exponential, cosine"
    )


def _constant(epoch: int) -> float:
    return 1.0


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor | None:
    """Clip the total gradient L2 norm to ``max_norm``; no-op (returns None) when 0.

    Returns the norm before clipping, for logging.
    """
    if max_norm <= 0:
        return None
    params = [p for p in params if p.grad is not None]
    if not params:
        return None
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def get_lr(opt: torch.optim.Optimizer) -> float:
    """The current learning rate (of the first param group)."""
    return opt.param_groups[0]["lr"]


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Put ``lr`` into every param group of a live optimizer (optimizer state is kept).

    A scheduler from ``build_scheduler`` continues from the new value at its
    next step (cosine still anneals towards its original eta_min). Read the
    rate back with ``get_lr``: ``scheduler.get_last_lr()`` is stale until then.
    """
    for group in opt.param_groups:
        group["lr"] = lr


def set_lrs(opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, cfg: OptimConfig) -> None:
    """Set G's rate to ``cfg.lr`` and D's to ``cfg.lr * cfg.d_lr_ratio`` (TTUR) in place."""
    set_lr(opt_g, cfg.lr)
    set_lr(opt_d, d_lr(cfg))
