"""The epoch loop: data, steps, validation, FID, grids, checkpoints, metrics.

Runs in-process (``fit(cfg)``) and, unchanged, inside each Ray Train worker
(``fit(cfg, ctx, wrap=prepare_model, on_epoch_end=report)``). Only rank 0
writes artifacts; every rank calls ``on_epoch_end`` once per epoch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from ganray import checkpoint as ckpt
from ganray import losses
from ganray.config import Config, ConfigError, build_config
from ganray.config_compat import identity
from ganray.data import build_dataset
from ganray.models import build_models
from ganray.models.precision import set_block_dtype
from ganray.optim import build_optimizers, build_scheduler
from ganray.storage import Storage, join
from ganray.train import artifacts, progressive
from ganray.train.batches import build_batches
from ganray.train.distributed import DistContext, compute_plan, to_channels_last, unwrap
from ganray.train.lease import Lease, LeaseError, new_owner
from ganray.train.progress import epoch_summary, progress_line
from ganray.train.rng import capture_rng, restore_rng, to_device
from ganray.train.step import (
    GanState,
    gan_step,
    gather_ada_sums,
    grad_scalers,
    own_ada_sums,
    sample_slice,
    training_state_metrics,
)

log = logging.getLogger("ganray.train")

RUN_CONFIG = "config.yaml"  # the run's full validated config
ERROR_FILE = "error.json"  # why a run stopped early (read by the Ray trial driver)

EpochHook = Callable[[dict[str, Any], "str | None"], None]


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def run_name_for(cfg: Config) -> str:
    """Stable run folder name: the same config (storage aside) resumes the same run.

    The hash covers ``config_compat.identity``: a field added by a later release
    is hashed only when set away from its default, so upgrading ganray keeps
    every run's name (and "re-run the same command" keeps resuming it).
    """
    if cfg.storage.run_name:
        return cfg.storage.run_name
    d = identity(cfg.to_dict(), Config().to_dict())
    digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
    return f"{cfg.model.arch}-{digest}"


def run_uri_for(cfg: Config) -> str:
    return join(cfg.storage.uri, run_name_for(cfg))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Owns one run's modules and state; ``fit()`` trains the remaining epochs."""

    def __init__(
        self,
        cfg: Config,
        ctx: DistContext | None = None,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
        on_epoch_end: EpochHook | None = None,
        lease_owner: str | None = None,
    ) -> None:
        self.cfg = cfg
        # Who holds the run's lease while fitting: one token per run attempt (a Ray
        # trial passes the same token to every restart of its workers).
        self.lease_owner = lease_owner or new_owner()
        self._lease: Lease | None = None
        if ctx is None:
            ctx = DistContext(device=torch.device(compute_plan(cfg.train).device_type))
        self.ctx = ctx
        self.plan = compute_plan(cfg.train, gpu=ctx.device.type == "cuda")
        self.storage = Storage.from_config(cfg.storage)
        self.run_uri = run_uri_for(cfg)
        self.on_epoch_end = on_epoch_end
        self._build_data()
        self._build_modules()
        self.epoch, self.images_seen, self.history = 0, 0, []
        self._backbone = None  # FID feature network, built on the first evaluation
        self.resumed_at: list[int] = []  # epochs this run was resumed from (restarts, reruns)
        self._resume()
        if wrap is not None:
            self.state.G, self.state.D = wrap(self.state.G), wrap(self.state.D)

    # ------------------------------------------------------------ setup
    def _build_data(self) -> None:
        c = self.cfg
        self.growth = progressive.build_schedule(c)  # resolution, alpha and global batch per images seen
        self.dataset = build_dataset(c.data, "train", self.storage)
        self.train_batches, self.val_batches = build_batches(
            c, self.dataset, self.ctx, self.growth, self.plan.channels_last
        )

    def _build_modules(self) -> None:
        c, dev = self.cfg, self.ctx.device
        seed_everything(c.train.seed)  # same weights on every rank
        G, D = build_models(c.model)
        G, D = G.to(dev), D.to(dev)
        if self.plan.channels_last:
            G, D = to_channels_last(G), to_channels_last(D)
        # Models with per-block precision (StyleGAN2 num_fp16_res) cast inside instead of
        # autocast (see compute_plan); G_ema, a copy, computes like G. The loss scalers
        # follow the low dtype in use (fp16 gets them).
        amp = low = self.plan.amp_dtype
        if set_block_dtype(G, self.plan.block_dtype) + set_block_dtype(D, self.plan.block_dtype):
            amp, low = None, self.plan.block_dtype
        use_ema = c.train.ema_decay > 0 or c.train.ema_kimg > 0
        G_ema = copy.deepcopy(G).eval().requires_grad_(False) if use_ema else None
        opt_g, opt_d = build_optimizers(G, D, c.optim, c.train.reg)
        scaler_g, scaler_d = grad_scalers(low, dev)
        self.state = GanState(
            G=G,
            D=D,
            opt_g=opt_g,
            opt_d=opt_d,
            G_ema=G_ema,
            amp_dtype=amp,
            noise=torch.Generator(device=dev).manual_seed(c.train.seed),
            scaler_g=scaler_g,
            scaler_d=scaler_d,
        )
        progressive.apply_stage(self.state, self.growth)
        self.sched_g = build_scheduler(opt_g, c.schedule, c.train.epochs)
        self.sched_d = build_scheduler(opt_d, c.schedule, c.train.epochs)
        # Per-rank seed for anything random beyond the shared noise stream.
        seed_everything(c.train.seed * 1000 + self.ctx.rank)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        s = self.state
        sd = {
            "epoch": self.epoch,
            "images_seen": self.images_seen,
            "history": self.history,
            "resumed_at": self.resumed_at,
            "config": self.cfg.to_dict(),
            "G": unwrap(s.G).state_dict(),
            "D": unwrap(s.D).state_dict(),
            "opt_g": s.opt_g.state_dict(),
            "opt_d": s.opt_d.state_dict(),
            "rng": capture_rng(s.noise, self.ctx.device),
            "extra": s.extra,
        }
        if s.G_ema is not None:
            sd["G_ema"] = s.G_ema.state_dict()
        for name, obj in (
            ("sched_g", self.sched_g),
            ("sched_d", self.sched_d),
            ("scaler_g", s.scaler_g),
            ("scaler_d", s.scaler_d),
        ):
            if obj is not None:
                sd[name] = obj.state_dict()
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        s = self.state
        ckpt.check_compatible(sd, self.cfg.to_dict()["model"])
        progressive.check_resume(sd.get("config", {}), self.cfg)  # same schedule and batch table
        unwrap(s.G).load_state_dict(sd["G"])
        unwrap(s.D).load_state_dict(sd["D"])
        s.opt_g.load_state_dict(sd["opt_g"])
        s.opt_d.load_state_dict(sd["opt_d"])
        if s.G_ema is not None:
            s.G_ema.load_state_dict(sd.get("G_ema", sd["G"]))
        for name, obj in (
            ("sched_g", self.sched_g),
            ("sched_d", self.sched_d),
            ("scaler_g", s.scaler_g),
            ("scaler_d", s.scaler_d),
        ):
            if obj is not None and name in sd:
                obj.load_state_dict(sd[name])
        restore_rng(sd["rng"], s.noise, self.ctx.device)
        s.extra = to_device(sd.get("extra", {}), self.ctx.device)
        own_ada_sums(s, self.ctx)
        progressive.apply_stage(s, self.growth)  # the stage (and alpha) of the images seen
        self.epoch, self.images_seen, self.history = sd["epoch"], sd["images_seen"], list(sd["history"])
        self.resumed_at = [*sd.get("resumed_at", []), self.epoch]

    def _resume(self) -> None:
        """Continue from the newest good checkpoint of this run, if any (rank 0 decides)."""
        found: tuple[int | None, str | None] = (None, None)
        sd = None
        if self.ctx.is_main:
            try:
                sd = ckpt.load_latest(self.storage, self.run_uri)
                found = (sd["epoch"] if sd is not None else None, None)
            except ckpt.CheckpointError as e:
                found = (None, str(e))
        epoch, error = self.ctx.broadcast_object(found)  # every rank stops, or every rank resumes
        if error:
            raise ckpt.CheckpointError(error)
        if epoch is None:
            return
        if sd is None:
            sd = ckpt.load_checkpoint(self.storage, ckpt.checkpoint_uri(self.run_uri, epoch))
        self.load_state_dict(sd)
        log.info("resumed %s from epoch %d (%d images seen)", self.run_uri, self.epoch, self.images_seen)

    def _write_run_config(self) -> None:
        """(Re)write RUN/config.yaml with the config this run trains with; say so if it was damaged."""
        uri = join(self.run_uri, RUN_CONFIG)
        if self.storage.exists(uri):
            try:
                build_config(yaml.safe_load(self.storage.read_text(uri)))
            except (yaml.YAMLError, UnicodeDecodeError, ConfigError, ValueError) as e:
                log.warning("%s was unreadable (%s); re-writing it from the run's config", uri, e)
        self.storage.write_text(uri, self.cfg.to_yaml())

    # ------------------------------------------------------------ training
    def fit(self) -> list[dict[str, Any]]:
        """Train until ``train.epochs``; return the per-epoch metrics history.

        Rank 0 holds the run's lease meanwhile: another live run on the same
        folder makes every rank raise LeaseError before anything is written.
        """
        error = None
        if self.ctx.is_main:
            self._lease = Lease(self.storage, self.run_uri, self.lease_owner)
            try:
                self._lease.acquire()
            except LeaseError as e:
                self._lease, error = None, str(e)
        error = self.ctx.broadcast_object(error)
        if error:
            raise LeaseError(error)
        try:
            return self._fit()
        finally:
            if self._lease is not None:
                self._lease.release()
                self._lease = None

    def _fit(self) -> list[dict[str, Any]]:
        c = self.cfg
        if self.ctx.is_main:
            self._write_run_config()
        if self.ctx.is_main and self.epoch == 0:
            self._save_grid(0)
        if self.ctx.is_main:
            self.storage.remove(join(self.run_uri, ERROR_FILE))
            log.info(
                "run %s: epochs %d..%d of %s, %d worker(s) on %s, %d torch threads, %d training images",
                self.run_uri,
                self.epoch + 1,
                c.train.epochs,
                c.model.arch,
                self.ctx.world_size,
                self.ctx.device,
                torch.get_num_threads(),
                len(self.train_batches.indices),
            )
        t_start = time.time()
        while self.epoch < c.train.epochs:
            try:
                row = self._train_epoch(self.epoch + 1, t_start)
            except NonFiniteLossError as e:
                if self.ctx.is_main:
                    self.storage.write_text(
                        join(self.run_uri, ERROR_FILE),
                        json.dumps({"error": "NonFiniteLossError", "message": str(e)}),
                    )
                raise
            self.epoch += 1
            self.history.append(row)
            if self.ctx.is_main:
                log.info("%s", epoch_summary(row, c.train.epochs))
            uri = self._save_artifacts(row)
            if self.on_epoch_end is not None:
                self.on_epoch_end(row, uri)
        if self.ctx.is_main:
            self.storage.write_text(
                join(self.run_uri, "done.json"),
                json.dumps(
                    {
                        "epochs": self.epoch,
                        "resumed_at": self.resumed_at,
                        "last": self.history[-1] if self.history else {},
                    }
                ),
            )
        return self.history

    def _train_epoch(self, epoch: int, t_start: float) -> dict[str, Any]:
        c, ctx, s = self.cfg, self.ctx, self.state
        self._eval_backbone()  # before training: a backbone this node cannot load loses no epoch
        s.G.train()
        s.D.train()
        sums = torch.zeros(4, device=ctx.device)
        # Global batch of each step: it follows the stage (train.progressive.batch_sizes).
        sizes = self.train_batches.steps(int(s.extra.get("images", 0)))
        steps, n_steps, images, t0 = 0, len(sizes), 0, time.time()
        last_log = t0
        by_res = progressive.LossByResolution()
        for real in self.train_batches.epoch(epoch, sizes):
            progressive.apply_stage(s, self.growth)  # growing models: this step's resolution, alpha
            out = gan_step(s, progressive.stage_reals(s, real), c.train, c.optim, ctx)
            sums += torch.stack([out["d_loss"], out["g_loss"], out["d_acc_real"], out["d_acc_fake"]])
            by_res.add(s, out)
            images += sizes[steps]
            steps += 1
            if steps % 25 == 0 or steps == n_steps:
                self._check_finite(sums, epoch, steps)
            if ctx.is_main and (time.time() - last_log > 10 or steps == n_steps):
                last_log = time.time()
                self._log_progress(epoch, steps, n_steps, images / (last_log - t0), t_start)
        self.images_seen += images
        gather_ada_sums(s, c.train, ctx)  # before rank 0 checkpoints: the sums of every rank
        seconds = time.time() - t0
        train = ctx.all_reduce_sum(sums) / (steps * ctx.world_size)
        by_res.merge_into(s, ctx)
        lr_g, lr_d = s.opt_g.param_groups[0]["lr"], s.opt_d.param_groups[0]["lr"]
        for sched in (self.sched_g, self.sched_d):
            if sched is not None:
                sched.step()
        row = {
            "epoch": epoch,
            "images_seen": self.images_seen,
            "steps": steps,
            "d_loss": train[0].item(),
            "g_loss": train[1].item(),
            "d_acc_real": train[2].item(),
            "d_acc_fake": train[3].item(),
            **self._validate(),
            "epoch_seconds": seconds,
            "images_per_s": images / max(seconds, 1e-9),
            "lr_g": lr_g,
            "lr_d": lr_d,
            **training_state_metrics(s),  # pl_mean, aug_p, ada_rt when those phases run
            **progressive.stage_metrics(s),  # resolution, alpha of the epoch's last step (growing)
        }
        row.update(self._evaluate(epoch))
        return row

    def _check_finite(self, sums: torch.Tensor, epoch: int, step: int) -> None:
        if bool(torch.isfinite(sums[:2]).all()):
            return
        good = ckpt.list_checkpoints(self.storage, self.run_uri)
        where = good[-1].uri if good else "none yet (the run had not finished an epoch)"
        raise NonFiniteLossError(
            f"non-finite loss (NaN or inf) at epoch {epoch}, step {step} of run {self.run_uri}; "
            f"the last good checkpoint is kept: {where}. Lower optim.lr, set optim.grad_clip, "
            f"or turn on model.spectral_norm."
        )

    def _log_progress(self, epoch: int, step: int, n_steps: int, img_s: float, t_start: float) -> None:
        log.info(
            "%s", progress_line(epoch, self.cfg.train.epochs, step, n_steps, img_s, time.time() - t_start)
        )

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """D loss/accuracy on held-out real images and on fixed-noise fakes (eval mode)."""
        if len(self.val_batches) == 0:
            return {}
        c, ctx, s = self.cfg, self.ctx, self.state
        G, D = unwrap(s.G), unwrap(s.D)
        G.eval()
        D.eval()
        gen = torch.Generator(device=ctx.device).manual_seed(c.train.seed + 7919)
        sums = torch.zeros(5, device=ctx.device)  # four per-image sums and the image count
        for real in self.val_batches.epoch(0):
            real = progressive.stage_reals(s, real)
            n = real.shape[0]
            z = sample_slice(gen, n * ctx.world_size, (G.latent_dim,), ctx)
            rl, fl = D(real).float(), D(G(z)).float()
            acc_r, acc_f = losses.d_accuracy(rl, fl)
            d_l = losses.d_loss(c.train.loss, rl, fl, drift=c.train.drift)
            g_l = losses.g_loss(c.train.loss, fl)
            sums += torch.stack([d_l * n, g_l * n, acc_r * n, acc_f * n, real.new_tensor(float(n))])
        G.train()
        D.train()
        total = ctx.all_reduce_sum(sums)
        v = total[:4] / total[4]
        return {
            "val_d_loss": v[0].item(),
            "val_g_loss": v[1].item(),
            "val_d_acc_real": v[2].item(),
            "val_d_acc_fake": v[3].item(),
        }

    def _evaluates(self, epoch: int) -> bool:
        m = self.cfg.metrics
        return m.fid and (epoch % m.eval_every == 0 or epoch == self.cfg.train.epochs)

    def _eval_backbone(self) -> Any:
        """The FID backbone, built once per run. Called before the first epoch trains, so a
        node that cannot load the run's (pinned) backbone fails at once and loses no epoch."""
        if self._backbone is None and self.cfg.metrics.fid:
            from ganray.metrics.backbones import load_pinned_backbone

            m = self.cfg.metrics
            self._backbone = load_pinned_backbone(m.backbone, m, self.storage, self.cfg.data)
        return self._backbone

    def _evaluate(self, epoch: int) -> dict[str, Any]:
        """FID (and configured extras) on evaluation epochs; all ranks take part.

        A failure is recorded in the row (``eval_error``) and logged, and training
        goes on: the epoch's checkpoint is still written. Under DDP the ranks agree
        on failures before every collective (EvaluationError, raised by all ranks
        together); any other error there is raised, and Ray Train restarts the
        workers from the previous epoch's checkpoint.
        """
        if not self._evaluates(epoch):
            return {}
        from ganray.metrics import evaluate_generator
        from ganray.metrics.sampling import EvaluationError

        G = self.state.G_ema if self.state.G_ema is not None else unwrap(self.state.G)
        G = progressive.FullSize(G, self.cfg.model.resolution) if "resolution" in self.state.extra else G
        try:
            return evaluate_generator(
                G,
                self.cfg.metrics,
                self.cfg.data,
                self.storage,
                join(self.cfg.storage.uri, "_cache", "fid-stats"),
                self.ctx.device,
                rank=self.ctx.rank,
                world_size=self.ctx.world_size,
                seed=self.cfg.train.seed,
                backbone=self._eval_backbone(),
                dataset=self.dataset,  # the train split this run already decoded
            )
        except Exception as e:  # noqa: BLE001 - whatever broke, the trained epoch is kept
            if self.ctx.distributed and not isinstance(e, EvaluationError):
                raise  # only some ranks may have failed: going on could pair up different collectives
            log.warning("epoch %d: evaluation failed (training goes on): %s: %s", epoch, type(e).__name__, e)
            return {"eval_error": f"{type(e).__name__}: {e}"}

    # ------------------------------------------------------------ artifacts
    def sample(self, n: int, seed: int) -> torch.Tensor:
        """``n`` images from G_ema (or G) on fixed noise, in eval mode."""
        G = self.state.G_ema if self.state.G_ema is not None else unwrap(self.state.G)
        gen = torch.Generator(device=self.ctx.device).manual_seed(seed)
        was_training = G.training
        G.eval()
        with torch.no_grad():
            x = G(torch.randn(n, G.latent_dim, generator=gen, device=self.ctx.device))
        G.train(was_training)
        return progressive.to_full_size(x, self.cfg.model.resolution)

    def _save_grid(self, epoch: int) -> None:
        images = self.sample(self.cfg.train.grid_size, self.cfg.train.seed + 1)
        artifacts.save_epoch_grid(self.storage, self.run_uri, epoch, images)

    def _save_artifacts(self, row: dict[str, Any]) -> str | None:
        """Rank 0: grid, checkpoint (history inside), then the metrics tables."""
        if not self.ctx.is_main:
            return None
        if self._lease is not None:
            self._lease.check()  # taken over by another run: write nothing more
        self._save_grid(self.epoch)
        uri = ckpt.save_checkpoint(self.storage, self.run_uri, self.state_dict(), row)
        ckpt.prune_checkpoints(self.storage, self.run_uri, self.cfg.train.keep_checkpoints)
        artifacts.write_metrics(self.storage, self.run_uri, self.history)
        if "loss_by_res" in self.state.extra:  # progressive runs: the per-resolution loss table
            rows = progressive.loss_table(self.state)
            self.storage.write_text(join(self.run_uri, progressive.LOSS_TABLE), json.dumps(rows, indent=1))
        return uri


def fit(cfg: Config, ctx: DistContext | None = None, **kw: Any) -> list[dict[str, Any]]:
    """Train one run in this process (resuming it if it has checkpoints)."""
    return Trainer(cfg, ctx, **kw).fit()
