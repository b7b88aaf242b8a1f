"""ganray.train.step against a plain-torch reference: D steps, WGAN-GP, fp16 loss scaling, 2-rank DDP.

The reference below re-derives one documented GAN step by hand (SGD without
momentum, so an update is exactly ``lr * gradient``): ``d_steps`` D updates, the
extra ones on fakes of their own, the last on the fakes G is then trained on
through the updated D, with noise (and WGAN-GP's alpha) drawn in that order
from the step's generator.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganray.config import ModelConfig, OptimConfig, TrainConfig
from ganray.models import build_models
from ganray.optim import build_optimizers
from ganray.train.distributed import DistContext
from ganray.train.step import GanState, gan_step, grad_scalers

CPU = torch.device("cpu")
ONE = DistContext(device=CPU)
LR = 0.05
SGD = OptimConfig(name="sgd", momentum=0.0, lr=LR)
BATCH = 8  # global batch, images


def small_models(**kw) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return build_models(ModelConfig(ngf=8, ndf=8, latent_dim=16, **kw))


def make_state(G: nn.Module, D: nn.Module, optim: OptimConfig = SGD, **kw) -> GanState:
    opt_g, opt_d = build_optimizers(G, D, optim)
    return GanState(G, D, opt_g, opt_d, torch.Generator().manual_seed(0), **kw)


def real_batch(n: int = BATCH, scale: float = 1.0) -> torch.Tensor:
    return (torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1) * scale


def _sgd(params: list[nn.Parameter], loss: torch.Tensor) -> None:
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(LR * g)


def reference_step(G: nn.Module, D: nn.Module, real: torch.Tensor, gen: torch.Generator, cfg: TrainConfig):
    """The documented step in plain torch; returns (last D loss, G loss)."""
    n, d_params, g_params = real.shape[0], list(D.parameters()), list(G.parameters())
    for i in range(cfg.d_steps):
        z = torch.randn(n, G.latent_dim, generator=gen)
        if i < cfg.d_steps - 1:
            with torch.no_grad():
                fake = G(z)
        else:
            fake_for_g = G(z)
            fake = fake_for_g.detach()
        r, f = D(real), D(fake)
        if cfg.loss == "bce":
            d_loss = F.binary_cross_entropy_with_logits(r, torch.ones_like(r)) + (
                F.binary_cross_entropy_with_logits(f, torch.zeros_like(f))
            )
        else:  # wgan-gp: critic loss, drift on real logits, penalty on random interpolates
            d_loss = f.mean() - r.mean() + cfg.drift * (r**2).mean()
            alpha = torch.rand(n, 1, 1, 1, generator=gen)
            x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
            d_loss = d_loss + cfg.gp_weight * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        _sgd(d_params, d_loss)
    logits = D(fake_for_g)
    if cfg.loss == "bce":
        g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    else:
        g_loss = -logits.mean()
    _sgd(g_params, g_loss)
    return d_loss.detach(), g_loss.detach()


def assert_close_norm(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    """Equal up to float32 rounding, judged on the whole tensor: a single element of a
    gradient summed with cancellation may differ by 1e-3 relative, a wrong step by ~100%."""
    err = (a - b).norm().item()
    assert err <= 1e-3 * b.norm().item() + 1e-6, f"{name}: |a - b| = {err:.3g}, |b| = {b.norm().item():.3g}"


def assert_same_params(a: nn.Module, b: nn.Module) -> None:
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert_close_norm(pa, pb, name)


@pytest.mark.parametrize(
    "loss, d_steps, model",
    [
        ("bce", 1, {}),
        ("bce", 3, {}),  # two extra D updates on fakes of their own
        ("wgan-gp", 2, {"spectral_norm": True, "batchnorm_g": False}),  # GP with a BN-free critic
    ],
)
def test_step_equals_plain_torch_reference(loss, d_steps, model):
    cfg = TrainConfig(loss=loss, d_steps=d_steps)
    G, D = small_models(**model)
    G_ref, D_ref = copy.deepcopy(G), copy.deepcopy(D)
    state, real = make_state(G, D), real_batch()
    ref_gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        out = gan_step(state, real, cfg, SGD, ONE)
        d_ref, g_ref = reference_step(G_ref, D_ref, real, ref_gen, cfg)
        torch.testing.assert_close(out["d_loss"], d_ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out["g_loss"], g_ref, rtol=1e-4, atol=1e-5)
    assert_same_params(G, G_ref)
    assert_same_params(D, D_ref)
    # Noise consumption: both drew the same numbers, so the streams are at the same place.
    assert torch.equal(state.noise.get_state(), ref_gen.get_state())


def test_d_steps_update_d_that_many_times_per_g_update():
    G, D = small_models()
    state = make_state(G, D, OptimConfig())  # Adam counts its steps per parameter
    for _ in range(2):
        gan_step(state, real_batch(), TrainConfig(d_steps=3), OptimConfig(), ONE)
    d_steps = {int(s["step"]) for s in state.opt_d.state.values()}
    g_steps = {int(s["step"]) for s in state.opt_g.state.values()}
    assert (d_steps, g_steps) == ({6}, {2})
    # 3 latent batches per step (2 extra D updates + the shared G forward), nothing else.
    gen = torch.Generator().manual_seed(0)
    for _ in range(2 * 3):
        torch.randn(BATCH, 16, generator=gen)
    assert torch.equal(state.noise.get_state(), gen.get_state())


# ---------------------------------------------------------------- fp16 loss scaling


INIT_SCALE = 2.0**8  # GradScaler's default 2^16 overflows fp16 gradients of these nets at once


def fp16_state(G: nn.Module, D: nn.Module, optim: OptimConfig = SGD) -> GanState:
    scaler_g, scaler_d = (torch.amp.GradScaler("cpu", init_scale=INIT_SCALE) for _ in range(2))
    return make_state(G, D, optim, amp_dtype=torch.float16, scaler_g=scaler_g, scaler_d=scaler_d)


def test_scalers_only_for_fp16_and_on_the_training_device():
    assert grad_scalers(None, CPU) == (None, None)
    assert grad_scalers(torch.bfloat16, CPU) == (None, None)
    g, d = grad_scalers(torch.float16, CPU)
    assert g is not d and g._device == "cpu" and g.is_enabled() and g.get_scale() == 2.0**16


def test_fp16_step_unscales_before_the_update():
    """Scaled by 2^8 for backward, the update is the unscaled fp16 one (a missing unscale: 256x).

    Scaling by a power of two is exact, so D's update equals the same step without a
    scaler; G's gradients pass through D's fp16 backward, where scaling saves small
    values from underflow (fp16 subnormals below 6e-5), so they differ by ~5%.
    """
    G, D = small_models()
    G_plain, D_plain = copy.deepcopy(G), copy.deepcopy(D)
    start = [p.detach().clone() for p in G.parameters()]
    gan_step(fp16_state(G, D), real_batch(), TrainConfig(), SGD, ONE)
    gan_step(make_state(G_plain, D_plain, amp_dtype=torch.float16), real_batch(), TrainConfig(), SGD, ONE)
    assert_same_params(D, D_plain)
    for (name, p), q, p0 in zip(G.named_parameters(), G_plain.parameters(), start):
        step, plain = p - p0, q - p0
        assert plain.norm() > 0 and (step - plain).norm() < 0.15 * plain.norm(), name


def test_fp16_overflow_skips_the_d_update_and_halves_the_scale():
    G, D = small_models()
    state = fp16_state(G, D)
    before = copy.deepcopy(D.state_dict())
    out = gan_step(state, real_batch(scale=1e6), TrainConfig(), SGD, ONE)  # fp16 logits overflow
    assert not torch.isfinite(out["d_loss"])
    for name, p in D.named_parameters():
        assert torch.equal(p, before[name]), f"{name} changed on an overflowing step"
    assert state.scaler_d.get_scale() == INIT_SCALE / 2
    assert all(torch.isfinite(p).all() for p in G.parameters())


def test_fp16_clipping_sees_unscaled_gradients():
    G, D = small_models()
    clip = 1e-3  # far below the gradient norm (~1), so clipping is active
    optim = OptimConfig(name="sgd", momentum=0.0, lr=LR, grad_clip=clip)
    gan_step(fp16_state(G, D, optim), real_batch(), TrainConfig(), optim, ONE)
    for net in (G, D):
        norm = torch.cat([p.grad.flatten() for p in net.parameters()]).norm()
        assert norm.item() == pytest.approx(clip, rel=1e-3)


# ---------------------------------------------------------------- 2-rank DDP

DDP_MODEL = {"spectral_norm": True, "batchnorm_g": False}  # per-rank BN stats would differ from 1 process
DDP_CFG = TrainConfig(loss="wgan-gp", d_steps=2)


def _ddp_worker(rank: int, world: int, init: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        G, D = small_models(**DDP_MODEL)
        ddp = dict(forward_sync_buffers=False)  # as ray_trial.py's prepare_model
        Gw = nn.parallel.DistributedDataParallel(G, **ddp)
        Dw = nn.parallel.DistributedDataParallel(D, **ddp)
        opt_g, opt_d = build_optimizers(G, D, SGD)
        state = GanState(Gw, Dw, opt_g, opt_d, torch.Generator().manual_seed(0))
        per = BATCH // world
        real = real_batch()[rank * per : (rank + 1) * per]
        for _ in range(2):
            gan_step(state, real, DDP_CFG, SGD, DistContext(rank, world, CPU))
        torch.save(_params_and_grads(G, D), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def _params_and_grads(G: nn.Module, D: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for tag, net in (("G", G), ("D", D)):
        for name, p in net.named_parameters():
            out[f"{tag}.{name}"] = p.detach().clone()
            out[f"{tag}.{name}.grad"] = p.grad.clone()
    return out


def test_wgan_gp_on_two_gloo_ranks_equals_one_process(tmp_path):
    """Each rank takes half the batch and the matching noise slice: gradients (last D and G
    updates) and weights after 2 steps equal a 1-process run on the whole batch."""
    torch.multiprocessing.spawn(_ddp_worker, args=(2, f"file://{tmp_path}/pg", str(tmp_path)), nprocs=2)
    G, D = small_models(**DDP_MODEL)
    state = make_state(G, D)
    for _ in range(2):
        gan_step(state, real_batch(), DDP_CFG, SGD, ONE)
    single = _params_and_grads(G, D)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, t in single.items():
        for got in ranks:
            assert_close_norm(got[name], t, name)
