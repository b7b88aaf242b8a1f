"""One GAN training step: a discriminator update, then a generator update.

Knows nothing of Ray. G and D may be DDP-wrapped; the step only calls the
wrapper where gradients must be synchronised (D in its update, G for the
forward whose backward trains it) and the plain module elsewhere, so DDP never
all-reduces gradients that are thrown away.

Noise is drawn for the *global* batch from a generator seeded identically on
every rank, and each rank takes its slice: a run on W workers then sees the
same latent vectors as a run on one worker, which makes runs comparable (and
testable) across worker counts. The same holds for every other random draw
(per-layer noise inputs, style-mixing crossover, augmentation, path-length
noise).

Phases (NVlabs' Gmain, Greg, Dmain, Dreg): every step runs Dmain and Gmain;
the regularization phases in ``REG_PHASES`` run every ``interval`` steps as
their own optimizer step when the config switches them on (``train.reg``).
Nothing here branches on the model family: generators that take the style
keyword interface (``noise_shapes``, see ganray.models.registry) get their
noise inputs and style mixing from the step.

State that must survive a restart lives in ``GanState.extra`` (saved in the
checkpoint): ``step`` (steps done), ``images`` (images seen), ``pl_mean``,
``aug_p`` and the ADA sign accumulators, ``ema_step``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ganray import augment, losses
from ganray.config import ConfigError, OptimConfig, TrainConfig
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
        kw = generator_kwargs(state, G_plain, n * ctx.world_size, cfg, ctx)
        with torch.no_grad(), _autocast(state, ctx.device):
            fake = G_plain(z, **kw)
    with _autocast(state, ctx.device):
        real_logits = d_forward(state, D, real, cfg, ctx).float()
        fake_logits = d_forward(state, D, fake, cfg, ctx).float()
        loss = losses.d_loss(cfg.loss, real_logits, fake_logits, drift=cfg.drift)
    if losses.needs_gradient_penalty(cfg.loss) and cfg.gp_weight > 0:
        alpha = sample_slice(state.noise, n * ctx.world_size, (1, 1, 1), ctx, uniform=True)
        loss = loss + losses.gradient_penalty(D, real, fake.float(), cfg.gp_weight, alpha=alpha)
    _backward_and_step(loss, state.opt_d, unwrap(D).parameters(), state.scaler_d, grad_clip)
    acc_real, acc_fake = losses.d_accuracy(real_logits.detach(), fake_logits.detach())
    if cfg.augment.ada_target > 0:  # ADA's overfitting heuristic, summed over ranks later
        state.extra["ada_sign_sum"] = state.extra.get("ada_sign_sum", 0.0) + float(
            real_logits.detach().sign().sum()
        )
        state.extra["ada_count"] = state.extra.get("ada_count", 0) + n
    return loss.detach(), acc_real, acc_fake


def g_update(
    state: GanState, fake: torch.Tensor, cfg: TrainConfig, grad_clip: float, ctx: DistContext | None = None
):
    """One generator update on ``fake`` (with its graph) through a frozen D; detached loss out."""
    D_plain, G_plain = unwrap(state.D), unwrap(state.G)
    ctx = ctx or DistContext(device=fake.device)
    D_plain.requires_grad_(False)  # no D gradients during the G update: saves compute
    try:
        with _autocast(state, fake.device):
            loss = losses.g_loss(cfg.loss, d_forward(state, D_plain, fake, cfg, ctx).float())
        _backward_and_step(loss, state.opt_g, G_plain.parameters(), state.scaler_g, grad_clip)
    finally:
        D_plain.requires_grad_(True)
    if state.G_ema is not None:
        step = state.extra.get("ema_step", 0)
        if cfg.ema_kimg > 0:
            decay = ema_beta(
                fake.shape[0] * ctx.world_size, cfg.ema_kimg, cfg.ema_rampup, state.extra.get("images", 0)
            )
        else:
            # Warm-up: early on G_ema follows G closely, else a short run's G_ema would
            # still hold much of its random initialisation (0.999 needs ~5k steps).
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        ema_update(state.G_ema, G_plain, decay)
        state.extra["ema_step"] = step + 1
    return loss.detach()


def ema_beta(batch: int, ema_kimg: float, rampup: float, images_seen: int) -> float:
    """Per-step G_ema decay for a half-life of ``ema_kimg`` thousand images (NVlabs).

    After h = ema_kimg * 1000 images the old weights' share has halved:
    beta ** (h / batch) = 0.5. With ``rampup`` > 0 the half-life is at most
    ``images_seen * rampup`` so G_ema does not hold on to the random init.
    """
    half_life = ema_kimg * 1000.0
    if rampup > 0:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


# ---------------------------------------------------------------- inputs shared by the phases


def generator_kwargs(
    state: GanState, G_plain: nn.Module, n_global: int, cfg: TrainConfig, ctx: DistContext
) -> dict:
    """Keyword inputs for generators with the style interface (``noise_shapes``); {} for others.

    Per-layer noise and, with probability ``reg.style_mixing``, a second
    latent and a crossover layer in [1, num_ws) (NVlabs draws one crossover
    per batch). All drawn for the global batch from the shared stream.
    """
    shapes = getattr(G_plain, "noise_shapes", None)
    if shapes is None:
        if cfg.reg.style_mixing > 0:
            raise ConfigError(
                "train.reg.style_mixing needs a generator with per-layer styles (model.arch=stylegan2 or stylegan); "
                "set train.reg.style_mixing=0 for this architecture"
            )
        return {}
    kw: dict = {"noise": [sample_slice(state.noise, n_global, (1, s, s), ctx) for s in shapes]}
    if cfg.reg.style_mixing > 0:
        u = torch.rand(2, generator=state.noise, device=state.noise.device).tolist()
        if u[0] < cfg.reg.style_mixing:
            kw["mix_z"] = sample_slice(state.noise, n_global, (G_plain.latent_dim,), ctx)
            # Crossover in [1, styles in use): a growing G (stylegan) uses fewer styles early on.
            kw["crossover"] = 1 + int(u[1] * (getattr(G_plain, "active_ws", G_plain.num_ws) - 1))
    return kw


def d_forward(
    state: GanState, D: nn.Module, x: torch.Tensor, cfg: TrainConfig, ctx: DistContext
) -> torch.Tensor:
    """D's logits on ``x`` after DiffAugment (``train.augment``; identity when off or p = 0)."""
    policy = augment.parse_policy(cfg.augment.policy)
    p = state.extra.get("aug_p", cfg.augment.p)
    if policy and p > 0:
        u = sample_slice(state.noise, x.shape[0] * ctx.world_size, (augment.NUM_RANDOMS,), ctx, uniform=True)
        x = augment.diff_augment(x, policy, p, u)
    return D(x)


# ---------------------------------------------------------------- regularization phases


def d_reg(state: GanState, real: torch.Tensor, cfg: TrainConfig, grad_clip: float, ctx: DistContext) -> dict:
    """Dreg: lazy R1 on (augmented) reals, scaled by its interval; its own D optimizer step."""
    x = real.detach().requires_grad_(True)
    logits = d_forward(state, state.D, x, cfg, ctx).float()  # through DDP: gradients are all-reduced
    r1 = losses.r1_penalty(logits, x, cfg.reg.r1_gamma)
    # logits * 0 puts every D parameter in the graph (DDP expects all of them to get a gradient).
    loss = r1 * cfg.reg.r1_interval + logits.mean() * 0
    _backward_and_step(loss, state.opt_d, unwrap(state.D).parameters(), state.scaler_d, grad_clip)
    return {"r1": r1.detach()}


def g_reg(state: GanState, real: torch.Tensor, cfg: TrainConfig, grad_clip: float, ctx: DistContext) -> dict:
    """Greg: path-length regularization on batch / pl_batch_shrink fakes; its own G optimizer step.

    The DDP-wrapped G runs mapping and synthesis (``return_ws``) so the
    penalty's gradients are all-reduced; ``pl_mean`` follows the mean length
    over all ranks, so W workers keep the same ``pl_mean`` as one.
    """
    G_plain = unwrap(state.G)
    per_rank = max(real.shape[0] // cfg.reg.pl_batch_shrink, 1)
    n_global = per_rank * ctx.world_size
    z = sample_slice(state.noise, n_global, (G_plain.latent_dim,), ctx)
    kw = generator_kwargs(state, G_plain, n_global, cfg, ctx)
    img, ws = state.G(z, return_ws=True, **kw)
    pl_noise = sample_slice(state.noise, n_global, tuple(img.shape[1:]), ctx) / math.sqrt(
        img.shape[2] * img.shape[3]
    )
    lengths = losses.path_lengths(img.float(), ws, pl_noise)
    batch_mean = ctx.all_reduce_sum(lengths.detach().mean()) / ctx.world_size
    pl_mean = torch.tensor(state.extra.get("pl_mean", 0.0), dtype=torch.float32, device=img.device)
    pl_mean = pl_mean.lerp(batch_mean.float(), cfg.reg.pl_decay)
    state.extra["pl_mean"] = pl_mean.item()
    penalty = losses.path_length_penalty(lengths, pl_mean, cfg.reg.pl_weight)
    # img * 0 puts every G parameter (e.g. toRGB biases) in the graph for DDP.
    loss = penalty * cfg.reg.pl_interval + img[:, 0, 0, 0].mean() * 0
    _backward_and_step(loss, state.opt_g, G_plain.parameters(), state.scaler_g, grad_clip)
    return {"pl_penalty": penalty.detach()}


@dataclass(frozen=True)
class RegPhase:
    """A regularization phase: runs when ``enabled(cfg)``, every ``interval(cfg)`` steps."""

    name: str
    enabled: Callable[[TrainConfig], bool]
    interval: Callable[[TrainConfig], int]
    run: Callable[[GanState, torch.Tensor, TrainConfig, float, DistContext], dict]


REG_PHASES = (
    RegPhase("Dreg", lambda c: c.reg.r1_gamma > 0, lambda c: c.reg.r1_interval, d_reg),
    RegPhase("Greg", lambda c: c.reg.pl_weight > 0, lambda c: c.reg.pl_interval, g_reg),
)


ADA_SUMS = ("ada_sign_sum", "ada_count")  # per-rank sums since the last adjustment of p


def _adapt_augment(state: GanState, cfg: TrainConfig, global_batch: int, ctx: DistContext) -> None:
    """Every ``ada_interval`` steps move ``aug_p`` by ADA's rule from r_t over all ranks."""
    a = cfg.augment
    if a.ada_target <= 0 or state.extra["step"] % a.ada_interval:
        return
    sign_sum, count = _pop_reduced_ada_sums(state, ctx)
    rt = sign_sum / max(count, 1)
    state.extra["ada_rt"] = rt
    state.extra["aug_p"] = augment.ada_adjust(
        state.extra.get("aug_p", a.p), rt, a.ada_target, global_batch * a.ada_interval, a.ada_kimg
    )


def gather_ada_sums(state: GanState, cfg: TrainConfig, ctx: DistContext) -> None:
    """Move every rank's ADA sums since the last adjustment to rank 0 (the others keep none).

    Called at the end of each epoch, before rank 0 checkpoints its state: the checkpoint then
    holds the sums of all ranks, and a resumed run (every rank loads rank 0's state, then
    ``own_ada_sums``) adjusts p from the same r_t as an uninterrupted one."""
    if cfg.augment.ada_target <= 0:
        return
    sign_sum, count = _pop_reduced_ada_sums(state, ctx)
    if ctx.is_main:
        state.extra["ada_sign_sum"], state.extra["ada_count"] = sign_sum, count


def _pop_reduced_ada_sums(state: GanState, ctx: DistContext) -> tuple[float, int]:
    """This rank's ADA sums, removed from its state, summed over all ranks (exact: integers in float64)."""
    sums = ctx.all_reduce_sum(  # NCCL reduces device tensors only
        torch.tensor([float(state.extra.pop(k, 0)) for k in ADA_SUMS], dtype=torch.float64, device=ctx.device)
    )
    return float(sums[0]), int(sums[1])


def own_ada_sums(state: GanState, ctx: DistContext) -> None:
    """After a restore from rank 0's checkpoint: only rank 0 keeps the gathered ADA sums."""
    if not ctx.is_main:
        for k in ADA_SUMS:
            state.extra.pop(k, None)


def training_state_metrics(state: GanState) -> dict[str, float]:
    """Scalars of ``state.extra`` worth a metrics column (pl_mean, aug_p, ada_rt)."""
    return {k: float(state.extra[k]) for k in ("pl_mean", "aug_p", "ada_rt") if k in state.extra}


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
    G_plain, global_batch = unwrap(state.G), real.shape[0] * ctx.world_size
    z = sample_slice(state.noise, global_batch, (G_plain.latent_dim,), ctx)
    kw = generator_kwargs(state, G_plain, global_batch, cfg, ctx)
    with _autocast(state, ctx.device):
        fake = state.G(z, **kw)  # through DDP: its backward all-reduces G's gradients
    step = state.extra.get("step", 0)
    state.extra["images"] = state.extra.get("images", 0) + global_batch
    d_loss, acc_real, acc_fake = d_update(state, real, cfg, optim_cfg.grad_clip, ctx, fake.detach())
    g_loss = g_update(state, fake, cfg, optim_cfg.grad_clip, ctx)
    out = {"d_loss": d_loss, "g_loss": g_loss, "d_acc_real": acc_real, "d_acc_fake": acc_fake}
    for phase in REG_PHASES:
        if phase.enabled(cfg) and step % phase.interval(cfg) == 0:
            out.update(phase.run(state, real, cfg, optim_cfg.grad_clip, ctx))
    state.extra["step"] = step + 1
    _adapt_augment(state, cfg, global_batch, ctx)
    return out
