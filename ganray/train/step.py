"""One GAN training step: a discriminator update, then a generator update.

Knows nothing of Ray. G and D may be DDP-wrapped; the step only calls the
wrapper where gradients must be synchronised (D in its update, G for the
forward whose backward trains it) and the plain module elsewhere, so DDP never
all-reduces gradients that are thrown away.

Noise is drawn for the *global* batch from a generator seeded identically on
every rank, and each rank takes its slice: a run on W workers then sees the
same latent vectors as a run on one worker, which makes runs comparable (and
testable) across worker counts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from ganray import losses
from ganray.config import OptimConfig, TrainConfig
from ganray.optim import clip_gradients
from ganray.train.distributed import DistContext, unwrap


@dataclass
class GanState:
    """Everything a step mutates. G/D may be DDP wrappers; G_ema never is."""

    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    noise: torch.Generator
    G_ema: nn.Module | None = None
    amp_dtype: torch.dtype | None = None  # None = full precision
    scaler_g: torch.amp.GradScaler | None = None  # only for fp16
    scaler_d: torch.amp.GradScaler | None = None
    extra: dict = field(default_factory=dict)  # room for later regularizer state


def grad_scalers(
    amp_dtype: torch.dtype | None, device: torch.device
) -> tuple[torch.amp.GradScaler | None, torch.amp.GradScaler | None]:
    """(G's, D's) loss scalers: only fp16 needs them (bf16 has fp32's range).

    The scaler is made for the training device's type, so the fp16 path is the
    same code on CUDA and CPU (torch >= 2.3 has a CPU GradScaler).
    """
    if amp_dtype != torch.float16:
        return None, None
    return torch.amp.GradScaler(device.type), torch.amp.GradScaler(device.type)


def sample_slice(
    gen: torch.Generator,
    global_batch: int,
    shape: tuple[int, ...],
    ctx: DistContext,
    uniform: bool = False,
) -> torch.Tensor:
    """Noise for the global batch (N(0,1), or U[0,1) if ``uniform``); this rank's slice."""
    draw = torch.rand if uniform else torch.randn
    z = draw((global_batch, *shape), generator=gen, device=gen.device)
    per = global_batch // ctx.world_size
    return z[ctx.rank * per : (ctx.rank + 1) * per].to(ctx.device, non_blocking=True)


def _autocast(state: GanState, device: torch.device):
    if state.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=state.amp_dtype)


def _backward_and_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    params,
    scaler: torch.amp.GradScaler | None,
    grad_clip: float,
) -> None:
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        clip_gradients(params, grad_clip)
        opt.step()
        return
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(opt)
        clip_gradients(params, grad_clip)
    scaler.step(opt)
    scaler.update()


def d_update(
    state: GanState,
    real: torch.Tensor,
    cfg: TrainConfig,
    grad_clip: float,
    ctx: DistContext,
    fake: torch.Tensor | None = None,
):
    """One discriminator update; returns detached (loss, acc_real, acc_fake).

    ``fake`` (detached) is reused from the step's G forward; without it the
    update draws its own fakes (extra D steps when ``d_steps > 1``).
    """
    D, n = state.D, real.shape[0]
    if fake is None:
        G_plain = unwrap(state.G)
        z = sample_slice(state.noise, n * ctx.world_size, (G_plain.latent_dim,), ctx)
        with torch.no_grad(), _autocast(state, ctx.device):
            fake = G_plain(z)
    with _autocast(state, ctx.device):
        real_logits = D(real).float()
        fake_logits = D(fake).float()
        loss = losses.d_loss(cfg.loss, real_logits, fake_logits, drift=cfg.drift)
    if losses.needs_gradient_penalty(cfg.loss) and cfg.gp_weight > 0:
        alpha = sample_slice(state.noise, n * ctx.world_size, (1, 1, 1), ctx, uniform=True)
        loss = loss + losses.gradient_penalty(D, real, fake.float(), cfg.gp_weight, alpha=alpha)
    _backward_and_step(loss, state.opt_d, unwrap(D).parameters(), state.scaler_d, grad_clip)
    acc_real, acc_fake = losses.d_accuracy(real_logits.detach(), fake_logits.detach())
    return loss.detach(), acc_real, acc_fake


def g_update(state: GanState, fake: torch.Tensor, cfg: TrainConfig, grad_clip: float):
    """One generator update on ``fake`` (with its graph) through a frozen D; detached loss out."""
    D_plain, G_plain = unwrap(state.D), unwrap(state.G)
    D_plain.requires_grad_(False)  # no D gradients during the G update: saves compute
    try:
        with _autocast(state, fake.device):
            loss = losses.g_loss(cfg.loss, D_plain(fake).float())
        _backward_and_step(loss, state.opt_g, G_plain.parameters(), state.scaler_g, grad_clip)
    finally:
        D_plain.requires_grad_(True)
    if state.G_ema is not None:
        # Warm-up: early on G_ema follows G closely, else a short run's G_ema would
        # still hold much of its random initialisation (0.999 needs ~5k steps).
        step = state.extra.get("ema_step", 0)
        ema_update(state.G_ema, G_plain, min(cfg.ema_decay, (1 + step) / (10 + step)))
        state.extra["ema_step"] = step + 1
    return loss.detach()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def gan_step(
    state: GanState, real: torch.Tensor, cfg: TrainConfig, optim_cfg: OptimConfig, ctx: DistContext
) -> dict[str, torch.Tensor]:
    """``cfg.d_steps`` D updates on ``real`` then one G update; detached tensors out.

    As in the DCGAN recipe, one G forward per step serves both updates: D
    sees the fakes detached, then G is trained through the updated D on the
    same fakes. Returns tensors (not floats) so the loop can accumulate
    without a device sync per step.
    """
    for _ in range(cfg.d_steps - 1):
        d_update(state, real, cfg, optim_cfg.grad_clip, ctx)
    latent = unwrap(state.G).latent_dim
    z = sample_slice(state.noise, real.shape[0] * ctx.world_size, (latent,), ctx)
    with _autocast(state, ctx.device):
        fake = state.G(z)  # through DDP: its backward all-reduces G's gradients
    d_loss, acc_real, acc_fake = d_update(state, real, cfg, optim_cfg.grad_clip, ctx, fake.detach())
    g_loss = g_update(state, fake, cfg, optim_cfg.grad_clip)
    return {"d_loss": d_loss, "g_loss": g_loss, "d_acc_real": acc_real, "d_acc_fake": acc_fake}
