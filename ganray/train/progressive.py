"""Progressive growing (Karras et al. 2018): which resolution and fade-in alpha apply after N images.

The schedule is a pure function of the number of training images seen, so
the training state only needs that integer (``GanState.extra["images"]``)
for a resumed run to continue at the same phase and the same alpha.

Phases (``train.progressive``), with F = fade images and S = stable images:

- phase 0 trains at ``start_resolution`` for images ``[0, S)``, alpha 1;
- phase p >= 1 starts at ``S + (p - 1) * (F + S)`` at twice the previous
  resolution: for its first F images alpha = images_in_phase / F (0 at the
  first image, reaching 1 at images_in_phase = F), then alpha 1 for S images;
- the last phase (``model.resolution``) never ends.

The stage of a step is read from the images seen *before* the step, so a
batch that straddles a boundary is trained at the stage it started in.
NVlabs' own schedule (``training_schedule`` in progressive_networks) is the
same with a stable part first in every phase; here the fade comes first in a
phase so that "phase p" means "resolution start * 2**p is in use".

Real images are served at the stage's resolution and blended exactly as G
blends its output (``real_images``): box-downsampled to the resolution and,
during a fade, mixed by alpha with their own 2x box-downsampled copy
upsampled back (nearest), as NVlabs' ``process_reals``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ganray.checkpoint import CheckpointError
from ganray.config import Config, ConfigError, ProgressiveConfig
from ganray.train.distributed import DistContext, unwrap
from ganray.train.step import GanState

GROWING_ARCHS = ("progan", "stylegan")  # architectures with a toRGB/fromRGB per resolution and fade-in


@dataclass(frozen=True)
class Stage:
    """Where training is: ``phase`` index, ``resolution`` in px, fade-in ``alpha`` in [0, 1]."""

    phase: int
    resolution: int
    alpha: float
    images_in_phase: int

    @property
    def fading(self) -> bool:
        return self.alpha < 1.0


def resolutions(start: int, final: int) -> list[int]:
    """The resolutions of the phases, ``start, 2*start, ..., final`` (both powers of two)."""
    for name, r in (("start", start), ("final", final)):
        if r < 4 or r & (r - 1):
            raise ValueError(f"{name} resolution {r} must be a power of two >= 4")
    if start > final:
        raise ValueError(f"start resolution {start} is above the final resolution {final}")
    return [start * 2**i for i in range(int(math.log2(final // start)) + 1)]


def stage_at(images: int, start: int, final: int, fade_images: int, stable_images: int) -> Stage:
    """The stage after ``images`` training images (see the module docstring for the rule)."""
    if images < 0:
        raise ValueError(f"images seen must be >= 0, got {images}")
    if fade_images < 0 or stable_images < 1:
        raise ValueError(f"need fade_images >= 0 and stable_images >= 1, got {fade_images}, {stable_images}")
    res = resolutions(start, final)
    if images < stable_images or len(res) == 1:
        return Stage(0, res[0], 1.0, images)
    period = fade_images + stable_images
    phase = min(1 + (images - stable_images) // period, len(res) - 1)
    t = images - stable_images - (phase - 1) * period
    alpha = min(t / fade_images, 1.0) if fade_images > 0 else 1.0
    return Stage(phase, res[phase], alpha, t)


def parse_table(text: str, key: str, allowed: list[int], integer: bool) -> dict[int, float]:
    """``"4:128,8:64"`` -> ``{4: 128, 8: 64}``; ConfigError naming ``key`` if malformed."""
    table: dict[int, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        res_s, sep, val_s = item.partition(":")
        try:
            res, val = int(res_s), float(val_s)
        except ValueError:
            res, val, sep = 0, 0.0, ""
        if not sep:
            raise ConfigError(f"{key}: {item!r} is not 'resolution:value', e.g. '4:128,8:64'")
        if res not in allowed:
            raise ConfigError(
                f"{key}: resolution {res} is not a phase of this run; phases: {', '.join(map(str, allowed))}"
            )
        if res in table:
            raise ConfigError(f"{key}: resolution {res} is given twice")
        if not (math.isfinite(val) and val > 0) or (integer and not val.is_integer()):
            kind = "a positive integer" if integer else "a positive number"
            raise ConfigError(f"{key}: value {val_s.strip()!r} for {res} px must be {kind}")
        table[res] = int(val) if integer else val
    return table


@dataclass(frozen=True)
class Schedule:
    """A run's progressive schedule: stages, and batch size / learning rate per resolution."""

    start: int
    final: int
    fade_images: int
    stable_images: int
    batch_sizes: dict[int, float]
    lrs: dict[int, float]
    default_batch: int
    default_lr: float
    reset_optimizer: bool = False

    def stage(self, images: int) -> Stage:
        return stage_at(images, self.start, self.final, self.fade_images, self.stable_images)

    def resolutions(self) -> list[int]:
        return resolutions(self.start, self.final)

    def batch_size(self, resolution: int) -> int:
        """Global batch at ``resolution`` (the table's, else ``train.batch_size``)."""
        return int(self.batch_sizes.get(resolution, self.default_batch))

    def batch_at(self, images: int) -> int:
        """Global batch of a step that starts after ``images`` images: it follows the stage."""
        return self.batch_size(self.stage(images).resolution)

    def lr(self, resolution: int) -> float:
        return float(self.lrs.get(resolution, self.default_lr))


def build_schedule(cfg: Config) -> Schedule:
    """The schedule of ``cfg`` (growing off: one phase at ``model.resolution``)."""
    p: ProgressiveConfig = cfg.train.progressive
    final = cfg.model.resolution
    start = p.start_resolution if p.enabled else final
    allowed = resolutions(start, final)
    key = "train.progressive"
    return Schedule(
        start=start,
        final=final,
        fade_images=round(p.fade_kimg * 1000),
        stable_images=max(round(p.stable_kimg * 1000), 1),
        batch_sizes=parse_table(p.batch_sizes, f"{key}.batch_sizes", allowed, integer=True),
        lrs=parse_table(p.lrs, f"{key}.lrs", allowed, integer=False),
        default_batch=cfg.train.batch_size,
        default_lr=cfg.optim.lr,
        reset_optimizer=p.enabled and p.reset_optimizer,
    )


def check_progressive(cfg: Config) -> None:
    """Cross-section rules of ``train.progressive``; ConfigError naming the fix."""
    if cfg.train.progressive.enabled and cfg.model.arch not in GROWING_ARCHS:
        raise ConfigError(
            f"train.progressive.enabled needs a growing architecture ({', '.join(GROWING_ARCHS)}); "
            f"model.arch is {cfg.model.arch!r}: set train.progressive.enabled=false"
        )
    sched = build_schedule(cfg)
    for res in resolutions(sched.start, sched.final):
        b = sched.batch_size(res)
        key = "train.progressive.batch_sizes" if res in sched.batch_sizes else "train.batch_size"
        if b % cfg.train.workers:
            raise ConfigError(
                f"{key}: the global batch {b} at {res} px must be divisible by train.workers "
                f"({cfg.train.workers}): each worker takes batch / workers images; use a multiple of "
                f"{cfg.train.workers}"
            )
        if b > 65536:
            raise ConfigError(f"train.progressive.batch_sizes: {b} at {res} px is above 65536")
        if sched.lr(res) > 1.0:
            raise ConfigError(f"train.progressive.lrs: {sched.lr(res)} at {res} px is above 1.0")
    if sched.lrs and cfg.schedule.name != "none":
        raise ConfigError(
            f"train.progressive.lrs and schedule.name={cfg.schedule.name} both set the learning rate; "
            f"use one (schedule.name=none with a per-resolution table)"
        )


def check_resume(saved: dict, cfg: Config) -> None:
    """Refuse to resume a growing run whose schedule (or batch table) differs from its checkpoint's.

    The stage and the steps of every epoch are functions of the images seen
    under the schedule, so a changed start, fade, stable or batch entry would
    move the run to another resolution, alpha or data order at once. ``lrs``
    may change, like ``optim.lr``. ``saved`` is the checkpoint's config dict.
    """
    train, key = saved.get("train", {}), "train.progressive"
    fields = {f.name for f in dataclasses.fields(ProgressiveConfig)}
    saved_p = {k: v for k, v in train.get("progressive", {}).items() if k in fields}
    old_p, new_p = ProgressiveConfig(**saved_p), cfg.train.progressive
    if not (old_p.enabled or new_p.enabled):
        return  # fixed-resolution runs: train.batch_size may change on resume, as before
    fix = "resume with the checkpoint's value, or start a new run (another storage.run_name)"
    for name in ("enabled", "start_resolution", "fade_kimg", "stable_kimg"):
        if getattr(old_p, name) != getattr(new_p, name):
            raise CheckpointError(
                f"{key}.{name}: checkpoint {getattr(old_p, name)!r} vs config {getattr(new_p, name)!r}; {fix}"
            )
    old_batch = train.get("batch_size", cfg.train.batch_size)
    old = build_schedule(
        dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, progressive=old_p, batch_size=old_batch)
        )
    )
    new = build_schedule(cfg)
    for res in new.resolutions():
        if old.batch_size(res) != new.batch_size(res):
            raise CheckpointError(
                f"{key}.batch_sizes: the checkpoint trained with a global batch of {old.batch_size(res)} at {res} px, "
                f"the config asks for {new.batch_size(res)}; set {key}.batch_sizes={old_p.batch_sizes!r} and "
                f"train.batch_size={old_batch} as the checkpoint has, or start a new run (another storage.run_name)"
            )


def real_images(x: torch.Tensor, resolution: int, alpha: float = 1.0) -> torch.Tensor:
    """Reals ``[N, C, R, R]`` at ``resolution``, faded by ``alpha`` like G's output (module docstring)."""
    r = resolution
    if x.shape[-1] % r:
        raise ValueError(f"images of side {x.shape[-1]} cannot be reduced to {r} px")
    if x.shape[-1] != r:
        x = F.avg_pool2d(x, x.shape[-1] // r)
    if alpha < 1.0:
        low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
        x = torch.lerp(low, x, alpha)
    return x


# ---------------------------------------------------------------- the training state


def apply_stage(state: GanState, schedule: Schedule) -> Stage | None:
    """Set G, D and G_ema to the stage of ``state.extra["images"]``; None for non-growing models.

    The stage is recomputed from the images seen (saved in the checkpoint), so
    a resumed run continues at the same phase and alpha. With
    ``reset_optimizer`` the optimizers' state is cleared when the phase
    changes (the previous phase is read from ``extra``, so a resume agrees). ``phase``,
    ``resolution`` and ``alpha`` are also kept in ``state.extra`` for metrics
    and for anyone reading the checkpoint.
    """
    if not hasattr(unwrap(state.G), "set_stage"):
        return None
    stage = schedule.stage(int(state.extra.get("images", 0)))
    if schedule.reset_optimizer and state.extra.get("phase", stage.phase) != stage.phase:
        for opt in (state.opt_g, state.opt_d):
            opt.state.clear()  # moments and step counts start over in the new phase
    for m in (unwrap(state.G), unwrap(state.D), state.G_ema):
        if m is not None:
            m.set_stage(stage.resolution, stage.alpha)
    if schedule.lrs:  # (only then: schedule.name is none, nothing else moves the lr)
        _set_lr(state, schedule.lr(stage.resolution) / schedule.default_lr)
    state.extra.update(phase=stage.phase, resolution=stage.resolution, alpha=stage.alpha)
    return stage


def _set_lr(state: GanState, ratio: float) -> None:
    """Every param group's lr = its lr as built (TTUR, lazy-reg correction kept) * ``ratio``."""
    for opt in (state.opt_g, state.opt_d):
        for group in opt.param_groups:
            group.setdefault("built_lr", group["lr"])  # saved with the optimizer state
            group["lr"] = group["built_lr"] * ratio


def stage_reals(state: GanState, x: torch.Tensor) -> torch.Tensor:
    """Reals served at the state's current stage (unchanged for non-growing models)."""
    if "resolution" not in state.extra:
        return x
    return real_images(x, state.extra["resolution"], state.extra["alpha"])


def stage_metrics(state: GanState) -> dict[str, float]:
    """``resolution`` (px) and ``alpha`` columns for metrics rows of growing models."""
    return {k: float(state.extra[k]) for k in ("resolution", "alpha") if k in state.extra}


LOSS_TABLE = "loss_by_resolution.json"  # per-resolution mean losses, beside metrics.jsonl


class LossByResolution:
    """Sums of D and G loss per resolution over an epoch, merged into ``extra["loss_by_res"]``.

    Kept in the training state (so a resumed run's table covers the whole run)
    as ``{"<px>": [d_loss_sum, g_loss_sum, steps]}`` summed over ranks.
    """

    def __init__(self) -> None:
        self.sums: dict[int, torch.Tensor] = {}

    def add(self, state: GanState, out: dict[str, torch.Tensor]) -> None:
        if "resolution" in state.extra:
            r = int(state.extra["resolution"])
            step = torch.stack(
                [out["d_loss"].float(), out["g_loss"].float(), torch.ones_like(out["d_loss"].float())]
            )
            self.sums[r] = self.sums[r] + step if r in self.sums else step

    def merge_into(self, state: GanState, ctx: DistContext) -> None:
        """Add this epoch's sums (over all ranks; every rank has the same resolutions) to ``extra``."""
        table = state.extra.setdefault("loss_by_res", {}) if self.sums else None
        for r in sorted(self.sums):
            d, g, n = ctx.all_reduce_sum(self.sums[r]).tolist()
            old = table.get(str(r), [0.0, 0.0, 0.0])
            table[str(r)] = [old[0] + d, old[1] + g, old[2] + n]
        self.sums = {}


def loss_table(state: GanState) -> list[dict[str, float]]:
    """Rows ``{resolution, d_loss, g_loss, steps}`` (means over all steps at that resolution)."""
    table = state.extra.get("loss_by_res", {})
    return [
        {"resolution": int(r), "d_loss": d / n, "g_loss": g / n, "steps": int(n)}
        for r, (d, g, n) in sorted(table.items(), key=lambda kv: int(kv[0]))
    ]


class FullSize(nn.Module):
    """``G`` with its images upsampled (nearest) to ``size`` px: grids and FID see every stage."""

    def __init__(self, G: nn.Module, size: int):
        super().__init__()
        self.G, self.size, self.latent_dim = G, size, G.latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return to_full_size(self.G(z), self.size)


def to_full_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Nearest-neighbour upsampling to ``size`` px, so grids and FID inputs show the growth."""
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="nearest")
