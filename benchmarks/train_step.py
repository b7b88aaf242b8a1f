"""DCGAN train-step throughput: ganray's step vs a plain PyTorch loop, same run.

Both sides use the same layers (ganray.models' DCGAN, rebuilt from the same
seed), the same batch of real Fashion-MNIST images, Adam(2e-4, 0.5) and the
non-saturating BCE loss. The plain side is the PyTorch DCGAN example's loop
(D on real, D on fake, G through D). Rounds alternate between the two so that
drift in machine load hits both alike; the ratio uses the median round.

Usage: python benchmarks/train_step.py [--steps 10] [--rounds 5] [--ngf 64]
Writes benchmarks/results/train_step.json (target: ratio >= 0.95).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _results import write_result  # benchmarks/ is on sys.path when a script runs

from ganray.config import build_config
from ganray.data import build_dataset
from ganray.models import build_models
from ganray.optim import build_optimizers
from ganray.train.distributed import DistContext
from ganray.train.step import GanState, gan_step

OUT = Path(__file__).parent / "results" / "train_step.json"


def make(cfg, seed: int = 0):
    torch.manual_seed(seed)
    G, D = build_models(cfg.model)
    opt_g, opt_d = build_optimizers(G, D, cfg.optim)
    return G, D, opt_g, opt_d


def plain_steps(G, D, opt_g, opt_d, real, steps: int, latent: int) -> float:
    """The PyTorch DCGAN example's loop (with logits + BCEWithLogits); returns seconds."""
    n = real.shape[0]
    ones, zeros = torch.ones(n), torch.zeros(n)
    t0 = time.perf_counter()
    for _ in range(steps):
        D.zero_grad(set_to_none=True)
        err_real = F.binary_cross_entropy_with_logits(D(real), ones)
        fake = G(torch.randn(n, latent))
        err_fake = F.binary_cross_entropy_with_logits(D(fake.detach()), zeros)
        (err_real + err_fake).backward()
        opt_d.step()
        G.zero_grad(set_to_none=True)
        err_g = F.binary_cross_entropy_with_logits(D(fake), ones)
        err_g.backward()
        opt_g.step()
    return time.perf_counter() - t0


def ganray_steps(state: GanState, real, steps: int, cfg, ctx) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        out = gan_step(state, real, cfg.train, cfg.optim, ctx)
    out["d_loss"].item()  # wait for the last step
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()

    cfg = build_config(
        {
            "model": {"ngf": args.ngf, "ndf": args.ngf},
            "train": {"batch_size": args.batch},
            "data": {"subset": args.batch},
        }
    )
    ctx = DistContext(device=torch.device("cpu"))
    real = build_dataset(cfg.data).images_uint8[: args.batch].float().div(127.5).sub(1.0)

    G1, D1, og1, od1 = make(cfg)
    G2, D2, og2, od2 = make(cfg)
    state = GanState(G=G2, D=D2, opt_g=og2, opt_d=od2, noise=torch.Generator().manual_seed(0))
    plain_steps(G1, D1, og1, od1, real, 2, cfg.model.latent_dim)  # warm-up
    ganray_steps(state, real, 2, cfg, ctx)
    plain_t, ours_t = [], []
    for _ in range(args.rounds):
        plain_t.append(plain_steps(G1, D1, og1, od1, real, args.steps, cfg.model.latent_dim))
        ours_t.append(ganray_steps(state, real, args.steps, cfg, ctx))
    imgs = args.steps * args.batch
    plain_ips = imgs / statistics.median(plain_t)
    ours_ips = imgs / statistics.median(ours_t)
    result = {
        "benchmark": "dcgan_train_step",
        "config": {
            "ngf": args.ngf,
            "ndf": args.ngf,
            "batch": args.batch,
            "resolution": 32,
            "optimizer": "adam 2e-4 b1 0.5",
            "loss": "bce",
            "steps_per_round": args.steps,
            "rounds": args.rounds,
        },
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "plain_images_per_s": round(plain_ips, 1),
        "ganray_images_per_s": round(ours_ips, 1),
        "ratio": round(ours_ips / plain_ips, 3),
        "target_ratio": 0.95,
        "rounds_seconds": {"plain": [round(t, 3) for t in plain_t], "ganray": [round(t, 3) for t in ours_t]},
    }
    write_result(result, OUT)


if __name__ == "__main__":
    main()
