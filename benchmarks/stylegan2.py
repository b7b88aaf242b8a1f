"""StyleGAN2 train-step throughput, peak memory and where the time goes.

For each resolution (32 and 64 px) with the stylegan2-quickstart recipe:

- img/s of the main phases only (Dmain + Gmain, regularizers off) and with
  the lazy phases at their intervals (R1 every 16, path length every 4,
  style mixing 0.9), over whole multiples of 16 steps;
- peak memory (CUDA: max allocated; CPU: growth of the process's max RSS);
- the share of step time spent in modulated convs and in FIR filtering
  (torch.profiler record_function ranges, self time of their ops);
- forward/backward time of the fused (grouped) and scale-conv-scale
  modulated-conv paths, in training and in inference, for one 128-channel
  layer and (``--modconv-only``) for the whole quickstart G at batch 1, 8
  and 32, the two paths alternating: the measurement behind
  ``choose_fused``'s 'auto' rule.

Runs on CUDA when present (same script). The machine's load average is in
the JSON: on a shared machine absolute figures are pessimistic, ratios less so.

Usage: python benchmarks/stylegan2.py [--steps 16] [--batch 32] [--resolutions 32 64]
Writes benchmarks/results/stylegan2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch
from _results import write_result  # benchmarks/ is on sys.path when a script runs

from ganray.config import load_config
from ganray.models import build_models, ops
from ganray.optim import build_optimizers
from ganray.train.distributed import DistContext, default_device
from ganray.train.step import GanState, gan_step

OUT = Path(__file__).parent / "results" / "stylegan2.json"
REG_OFF = ["train.reg.r1_gamma=0", "train.reg.pl_weight=0", "train.reg.style_mixing=0"]


def make_state(cfg, device):
    torch.manual_seed(0)
    G, D = build_models(cfg.model)
    G, D = G.to(device), D.to(device)
    opt_g, opt_d = build_optimizers(G, D, cfg.optim, cfg.train.reg)
    return GanState(G, D, opt_g, opt_d, torch.Generator(device=device).manual_seed(0))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(cfg, device, steps: int) -> dict:
    """img/s over ``steps`` gan_steps after 2 warm-up steps, and peak memory."""
    state, ctx = make_state(cfg, device), DistContext(device=device)
    real = torch.rand(cfg.train.batch_size, cfg.model.channels, cfg.model.resolution, cfg.model.resolution)
    real = (real * 2 - 1).to(device)
    for _ in range(2):
        gan_step(state, real, cfg.train, cfg.optim, ctx)
    state.extra["step"] = 0  # the timed window starts on a step where every phase is due
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        gan_step(state, real, cfg.train, cfg.optim, ctx)
    _sync(device)
    seconds = time.perf_counter() - t0
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        peak_mb = max(peak_mb, rss0 / 1024)
    return {
        "img_per_s": steps * cfg.train.batch_size / seconds,
        "seconds": seconds,
        "peak_mb": round(peak_mb, 1),
    }


def time_shares(cfg, device, steps: int) -> dict:
    """Share of profiled CPU/CUDA time inside modulated convs and FIR filtering."""
    from torch.profiler import ProfilerActivity, profile

    state, ctx = make_state(cfg, device), DistContext(device=device)
    real = torch.rand(cfg.train.batch_size, cfg.model.channels, cfg.model.resolution, cfg.model.resolution)
    real = (real * 2 - 1).to(device)
    gan_step(state, real, cfg.train, cfg.optim, ctx)
    spans = {"modconv": 0.0, "fir": 0.0}
    orig_mod, orig_fir = ops.modulated_conv2d, ops.upfirdn2d

    def timed(name, fn):
        def wrapper(*a, **k):
            _sync(device)
            t = time.perf_counter()
            out = fn(*a, **k)
            _sync(device)
            spans[name] += time.perf_counter() - t
            return out

        return wrapper

    # Forward time of the two op families (their backward is attributed by the profiler below).
    import ganray.models.stylegan2 as sg2

    sg2.modulated_conv2d = timed("modconv", orig_mod)
    ops.upfirdn2d = timed("fir", orig_fir)
    try:
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            for _ in range(steps):
                gan_step(state, real, cfg.train, cfg.optim, ctx)
            _sync(device)
        total = time.perf_counter() - t0
    finally:
        sg2.modulated_conv2d, ops.upfirdn2d = orig_mod, orig_fir
    ev = prof.key_averages()
    conv = sum(e.self_cpu_time_total for e in ev if "conv" in e.key) / 1e6
    all_ = sum(e.self_cpu_time_total for e in ev) / 1e6
    return {
        "forward_share_modconv": round(spans["modconv"] / total, 3),
        "forward_share_fir": round(spans["fir"] / total, 3),
        "share_all_convolution_ops": round(conv / max(all_, 1e-9), 3),
    }


def modconv_paths(device, batch: int, res: int, channels: int = 128) -> dict:
    """ms per call of the fused and unfused paths, training (fwd+bwd) and inference (fwd)."""
    x = torch.randn(batch, channels, res, res, device=device)
    w = torch.randn(channels, channels, 3, 3, device=device, requires_grad=True)
    s = torch.randn(batch, channels, device=device, requires_grad=True)
    f = ops.setup_filter().to(device)
    out = {}
    for fused in (True, False):
        name = "fused" if fused else "unfused"
        for mode in ("train", "eval"):

            def run(fused=fused, mode=mode):
                if mode == "train":
                    ops.modulated_conv2d(x, w, s, f, fused=fused).sum().backward()
                else:
                    with torch.no_grad():
                        ops.modulated_conv2d(x, w, s, f, fused=fused)

            run()
            _sync(device)
            t = time.perf_counter()
            for _ in range(5):
                run()
            _sync(device)
            out[f"{name}_{mode}_ms"] = round((time.perf_counter() - t) / 5 * 1000, 2)
    return out


def modconv_rule(device, batches: tuple[int, ...], res: int, rounds: int) -> dict:
    """The 'auto' rule's measurement: the whole quickstart G with every layer forced fused or unfused.

    Per batch size and mode (train: G forward + backward; eval: no_grad forward), the two
    paths run alternately ``rounds`` times; the medians and their ratio are reported, so a
    load change on a shared machine hits both paths alike.
    """
    from ganray.models.stylegan2 import SynthesisLayer

    cfg = load_config("stylegan2-quickstart", [f"model.resolution={res}", f"data.resolution={res}"])
    torch.manual_seed(0)
    G = build_models(cfg.model)[0].to(device)
    layers = [m for m in G.modules() if isinstance(m, SynthesisLayer)]
    out = {}
    for batch in batches:
        z = torch.randn(batch, G.latent_dim, device=device)
        for mode in ("train", "eval"):
            times: dict[str, list[float]] = {"fused": [], "unfused": []}
            for r in range(rounds + 1):  # round 0 warms up
                for path in ("fused", "unfused") if r % 2 else ("unfused", "fused"):
                    for m in layers:
                        m.fused = path
                    _sync(device)
                    t = time.perf_counter()
                    if mode == "train":
                        G(z).square().mean().backward()
                    else:
                        with torch.no_grad():
                            G(z)
                    _sync(device)
                    if r:
                        times[path].append(time.perf_counter() - t)
            med = {k: sorted(v)[len(v) // 2] * 1000 for k, v in times.items()}
            out[f"batch{batch}_{mode}"] = {
                "fused_ms": round(med["fused"], 2),
                "unfused_ms": round(med["unfused"], 2),
                "unfused_over_fused": round(med["unfused"] / med["fused"], 3),
                "unfused_wins_rounds": sum(u < f for u, f in zip(times["unfused"], times["fused"])),
                "rounds": rounds,
            }
    for m in layers:
        m.fused = "auto"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16, help="timed steps per setting (a multiple of 16)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument(
        "--modconv-only",
        action="store_true",
        help="only re-measure the modconv 'auto' rule (whole G) and update that key of --out",
    )
    ap.add_argument(
        "--rounds", type=int, default=9, help="alternating rounds of the modconv rule measurement"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.modconv_only:
        result = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
        load0 = os.getloadavg()
        rule = modconv_rule(default_device(), (1, 8, 32), 32, args.rounds)
        result.setdefault("modconv_rule_whole_G_32px", []).append(  # one entry per run: load varies
            {
                "device": str(default_device()),
                "threads": torch.get_num_threads(),
                "load_average_start": [round(x, 2) for x in load0],
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
                **rule,
            }
        )
        write_result(result, args.out)
        return
    device = default_device()
    result = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "load_average_start": os.getloadavg(),
        "batch": args.batch,
        "steps": args.steps,
        "by_resolution": {},
    }
    for res in args.resolutions:
        base = [f"model.resolution={res}", f"data.resolution={res}", f"train.batch_size={args.batch}"]
        cfg_main = load_config("stylegan2-quickstart", base + REG_OFF)
        cfg_lazy = load_config("stylegan2-quickstart", base)
        row = {
            "main_phases": time_steps(cfg_main, device, args.steps),
            "with_lazy_phases": time_steps(cfg_lazy, device, args.steps),
            "time_shares_with_lazy_phases": time_shares(cfg_lazy, device, max(args.steps // 4, 2)),
            "modconv_paths_128ch": modconv_paths(device, args.batch, res // 2),
        }
        row["lazy_over_main_img_s"] = round(
            row["with_lazy_phases"]["img_per_s"] / row["main_phases"]["img_per_s"], 3
        )
        result["by_resolution"][str(res)] = row
        result["load_average_end"] = os.getloadavg()
        write_result(result, args.out)  # after each resolution: a slow 64 px run keeps the 32 px figures


if __name__ == "__main__":
    main()
