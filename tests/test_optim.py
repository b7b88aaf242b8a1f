"""ganray.optim: optimizer kinds, TTUR, per-epoch schedules, clipping and live lr changes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganray.config import ConfigError, OptimConfig, ScheduleConfig
from ganray.optim import (
    build_optimizer,
    build_optimizers,
    build_scheduler,
    clip_gradients,
    get_lr,
    set_lr,
    set_lrs,
)


def params():
    return nn.Linear(3, 2).parameters()


def run_epochs(opt, sched, k):
    """k epochs: the optimizer steps, then the scheduler steps once per epoch."""
    for _ in range(k):
        opt.step()
        sched.step()
    return get_lr(opt)


def test_adam():
    opt = build_optimizer(params(), OptimConfig(name="adam", beta1=0.5, beta2=0.99, weight_decay=0.01), 2e-4)
    assert type(opt) is torch.optim.Adam
    g = opt.param_groups[0]
    assert g["lr"] == 2e-4 and g["betas"] == (0.5, 0.99) and g["weight_decay"] == 0.01


def test_rmsprop_uses_configured_momentum():
    opt = build_optimizer(params(), OptimConfig(name="rmsprop", momentum=0.0), 1e-3)
    assert type(opt) is torch.optim.RMSprop and opt.param_groups[0]["momentum"] == 0.0
    opt = build_optimizer(params(), OptimConfig(name="rmsprop", momentum=0.5), 1e-3)
    assert opt.param_groups[0]["momentum"] == 0.5


def test_sgd_and_nesterov():
    sgd = build_optimizer(params(), OptimConfig(name="sgd", momentum=0.8), 0.01)
    assert type(sgd) is torch.optim.SGD
    assert sgd.param_groups[0]["momentum"] == 0.8 and not sgd.param_groups[0]["nesterov"]
    nag = build_optimizer(params(), OptimConfig(name="nesterov", momentum=0.9), 0.01)
    assert type(nag) is torch.optim.SGD and nag.param_groups[0]["nesterov"]


def test_nesterov_needs_momentum():
    with pytest.raises(ConfigError, match="momentum"):
        build_optimizer(params(), OptimConfig(name="nesterov", momentum=0.0), 0.01)


def test_frozen_parameters_are_skipped():
    layer = nn.Linear(3, 2)
    layer.bias.requires_grad_(False)
    opt = build_optimizer(layer.parameters(), OptimConfig(), 1e-3)
    assert len(opt.param_groups[0]["params"]) == 1


@pytest.mark.parametrize("name", ["adam", "rmsprop", "sgd", "nesterov"])
def test_ttur(name):
    G, D = nn.Linear(4, 4), nn.Linear(4, 1)
    opt_g, opt_d = build_optimizers(G, D, OptimConfig(name=name, lr=1e-4, d_lr_ratio=4.0))
    assert get_lr(opt_g) == 1e-4
    assert get_lr(opt_d) == pytest.approx(4e-4)
    assert {id(p) for p in opt_g.param_groups[0]["params"]} == {id(p) for p in G.parameters()}
    assert {id(p) for p in opt_d.param_groups[0]["params"]} == {id(p) for p in D.parameters()}


# ---------------------------------------------------------------- schedules


def sched_for(name, lr=0.1, epochs=10, **kw):
    opt = build_optimizer(params(), OptimConfig(name="sgd", momentum=0.0), lr)
    return opt, build_scheduler(opt, ScheduleConfig(name=name, **kw), epochs)


def test_none_is_constant():
    opt, sched = sched_for("none")
    assert run_epochs(opt, sched, 7) == 0.1


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_step_schedule(k):
    opt, sched = sched_for("step", step_size=3, gamma=0.5)
    # lr * gamma ** (k // step_size): k=1,2 -> 0.1; k=3 -> 0.05; k=7 -> 0.025
    assert run_epochs(opt, sched, k) == pytest.approx(0.1 * 0.5 ** (k // 3))


@pytest.mark.parametrize("k", [1, 4])
def test_exponential_schedule(k):
    opt, sched = sched_for("exponential", gamma=0.9)
    assert run_epochs(opt, sched, k) == pytest.approx(0.1 * 0.9**k)  # k=4: 0.06561


@pytest.mark.parametrize("k", [0, 1, 5, 9, 10])
def test_cosine_schedule(k):
    opt, sched = sched_for("cosine", epochs=10, min_lr_ratio=0.1)
    eta_min = 0.1 * 0.1
    expected = eta_min + (0.1 - eta_min) * (1 + math.cos(math.pi * k / 10)) / 2  # k=5: 0.055, k=10: 0.01
    assert run_epochs(opt, sched, k) == pytest.approx(expected)


# ---------------------------------------------------------------- live changes (PBT)


def test_set_lr_keeps_state_and_schedule_continues():
    opt, sched = sched_for("step", step_size=2, gamma=0.5)
    layer_params = opt.param_groups[0]["params"]
    run_epochs(opt, sched, 1)  # 0.1, no decay yet
    set_lr(opt, 0.4)
    assert get_lr(opt) == 0.4 and opt.param_groups[0]["params"] is layer_params
    assert run_epochs(opt, sched, 1) == pytest.approx(0.2)  # the decay at epoch 2 applies to the new rate


def test_set_lr_then_constant_schedule_keeps_it():
    opt, sched = sched_for("none")
    set_lr(opt, 0.03)
    assert run_epochs(opt, sched, 3) == pytest.approx(0.03)


def test_set_lrs_applies_ttur():
    opt_g, opt_d = build_optimizers(nn.Linear(2, 2), nn.Linear(2, 1), OptimConfig(lr=1e-4))
    set_lrs(opt_g, opt_d, OptimConfig(lr=3e-4, d_lr_ratio=2.0))
    assert get_lr(opt_g) == 3e-4 and get_lr(opt_d) == pytest.approx(6e-4)


# ---------------------------------------------------------------- clipping


def _with_grads(scale):
    layer = nn.Linear(4, 4)
    for p in layer.parameters():
        p.grad = torch.full_like(p, scale)
    return layer


def test_clip_gradients_noop_when_zero():
    layer = _with_grads(10.0)
    assert clip_gradients(layer.parameters(), 0.0) is None
    assert all((p.grad == 10.0).all() for p in layer.parameters())


def test_clip_gradients_bounds_total_norm():
    layer = _with_grads(10.0)  # 20 entries of 10: norm = 10 * sqrt(20)
    before = clip_gradients(layer.parameters(), 1.0)
    assert before.item() == pytest.approx(10 * math.sqrt(20), rel=1e-5)
    after = torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()
    assert after.item() == pytest.approx(1.0, rel=1e-4)
