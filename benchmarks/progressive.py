"""Progressive growing: train images/s per phase (4, 8, 16, 32 px) for progan and stylegan.

For each growing architecture and each phase, G, D and G_ema are put at the
stage (stable: alpha 1; fading in: alpha 0.5, both heads live) and two loops
train them on the same batch of real Fashion-MNIST images:

- ganray: what Trainer runs per step (``apply_stage``, reals served at the
  stage by ``stage_reals``, ``gan_step`` with the non-saturating loss);
- plain: the PyTorch DCGAN example's loop (D on real, D on fake, G through D)
  on the same modules, with the reals box-downsampled once beforehand.

Steps alternate between the two (one ganray step, one plain step, ...), each
timed alone, so that drift in machine load hits both alike; img/s are from
the median step time, which a busy neighbour's spike does not move. Runs on CUDA when present (same
script). The load average is in the JSON: on a shared machine absolute
figures are pessimistic, the ganray/plain ratio less so.

Usage: nice -n 10 python benchmarks/progressive.py [--archs progan stylegan] [--batch 32]
Writes benchmarks/results/progressive.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _results import write_result  # benchmarks/ is on sys.path when a script runs

from ganray.config import ARCHS, load_config
from ganray.data import build_dataset
from ganray.models import build_models
from ganray.optim import build_optimizers
from ganray.train import progressive
from ganray.train.distributed import DistContext, default_device
from ganray.train.step import GanState, gan_step

OUT = Path(__file__).parent / "results" / "progressive.json"
RESOLUTIONS = (4, 8, 16, 32)


# Widths as stylegan2-quickstart's (channel_base 512: 128 maps at 4 px, 16 at 32 px).
WIDTHS = {
    "progan": ["model.progan.network_capacity=8", "model.progan.fmap_max=128"],
    "stylegan": [
        "model.stylegan.network_capacity=8",
        "model.stylegan.fmap_max=128",
        "model.stylegan.w_dim=128",
    ],
}


def config(arch: str, batch: int):
    """The quickstart recipe with ``arch`` growing 4 -> 32 px, non-saturating loss, no G_ema/regularizers."""
    return load_config(
        "quickstart",
        [
            f"model.arch={arch}",
            *WIDTHS.get(arch, []),
            "train.progressive.enabled=true",
            f"train.batch_size={batch}",
            f"data.subset={batch}",
            "train.loss=bce",
            "train.ema_decay=0",
            "optim.beta1=0.0",
            "optim.beta2=0.99",
        ],
    )


def at_stage(cfg, device, resolution: int, alpha: float):
    """Fresh G, D (seed 0) on ``device`` at the stage, their Adam optimizers."""
    torch.manual_seed(0)
    G, D = build_models(cfg.model)
    G, D = G.to(device), D.to(device)
    for m in (G, D):
        m.set_stage(resolution, alpha)
    opt_g, opt_d = build_optimizers(G, D, cfg.optim, cfg.train.reg)
    return G, D, opt_g, opt_d


def images_for(cfg, device) -> torch.Tensor:
    x = build_dataset(cfg.data).images_uint8[: cfg.train.batch_size]
    return x.to(device).float().div(127.5).sub(1.0)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_steps(G, D, opt_g, opt_d, real, steps: int) -> float:
    """The PyTorch DCGAN example's loop (logits + BCEWithLogits); seconds for ``steps`` steps."""
    n, dev = real.shape[0], real.device
    ones, zeros = torch.ones(n, device=dev), torch.zeros(n, device=dev)
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        D.zero_grad(set_to_none=True)
        fake = G(torch.randn(n, G.latent_dim, device=dev))
        err_d = F.binary_cross_entropy_with_logits(D(real).view(-1), ones)
        err_d = err_d + F.binary_cross_entropy_with_logits(D(fake.detach()).view(-1), zeros)
        err_d.backward()
        opt_d.step()
        G.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(D(fake).view(-1), ones).backward()
        opt_g.step()
    _sync(dev)
    return time.perf_counter() - t0


def ganray_steps(state: GanState, sched, real, steps: int, cfg, ctx) -> float:
    """What Trainer does per step (stage, reals at the stage, gan_step); seconds for ``steps``."""
    images = state.extra.get("images", 0)
    _sync(real.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        state.extra["images"] = images  # hold the stage still while timing
        progressive.apply_stage(state, sched)
        gan_step(state, progressive.stage_reals(state, real), cfg.train, cfg.optim, ctx)
    _sync(real.device)
    return time.perf_counter() - t0


def images_at(sched, resolution: int, alpha: float) -> int:
    """Images seen at which the schedule is at ``resolution`` with ``alpha`` (mid-fade or stable)."""
    phase = sched.resolutions().index(resolution)
    if phase == 0:
        return 0
    start = sched.stable_images + (phase - 1) * (sched.fade_images + sched.stable_images)
    return start + (round(alpha * sched.fade_images) if alpha < 1 else sched.fade_images)


def measure(arch: str, resolution: int, alpha: float, args, device) -> dict:
    cfg = config(arch, args.batch)
    sched = progressive.build_schedule(cfg)
    real = images_for(cfg, device)
    plain = at_stage(cfg, device, resolution, alpha)
    G, D, opt_g, opt_d = at_stage(cfg, device, resolution, alpha)
    state = GanState(G, D, opt_g, opt_d, torch.Generator(device=device).manual_seed(0))
    state.extra["images"] = images_at(sched, resolution, alpha)
    assert sched.stage(state.extra["images"]).resolution == resolution
    small = progressive.real_images(real, resolution, alpha)  # the plain loop's reals, resized once
    plain_steps(*plain, small, 2)  # warm-up
    ganray_steps(state, sched, real, 2, cfg, DistContext(device=device))
    t_plain, t_ours = [], []
    for _ in range(args.steps):
        t_plain.append(plain_steps(*plain, small, 1))
        t_ours.append(ganray_steps(state, sched, real, 1, cfg, DistContext(device=device)))
    plain_ips, ours_ips = args.batch / statistics.median(t_plain), args.batch / statistics.median(t_ours)
    return {
        "resolution": resolution,
        "alpha": alpha,
        "ganray_images_per_s": round(ours_ips, 1),
        "plain_images_per_s": round(plain_ips, 1),
        "ratio": round(ours_ips / plain_ips, 3),
        "params_g": sum(p.numel() for p in G.parameters()),
        "params_d": sum(p.numel() for p in D.parameters()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["progan", "stylegan"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12, help="timed steps of each loop, alternating")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    device = default_device()
    result = {
        "benchmark": "progressive_train_step",
        "config": "quickstart, model.arch=<arch> growing 4 -> 32 px, widths WIDTHS, loss bce, no EMA/regularizers",
        "widths": WIDTHS,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "niceness": os.nice(0),
        "load_average_start": os.getloadavg(),
        "batch": args.batch,
        "timed_steps": args.steps,
        "statistic": "img/s = batch / median step time (steps of the two loops alternate)",
        "by_arch": {},
    }
    for arch in args.archs:
        if arch not in ARCHS:
            result["by_arch"][arch] = {"skipped": f"arch {arch!r} is not registered in this ganray"}
            continue
        rows = []
        for res in RESOLUTIONS:
            for alpha in (0.5, 1.0) if res > RESOLUTIONS[0] else (1.0,):
                rows.append(measure(arch, res, alpha, args, device))
                result["by_arch"][arch] = rows
                result["load_average_end"] = os.getloadavg()
                write_result(result, args.out)  # after each phase: an interrupted run keeps its figures


if __name__ == "__main__":
    main()
