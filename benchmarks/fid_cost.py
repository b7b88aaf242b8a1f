"""Cost of one FID evaluation relative to one training epoch.

Trains one real epoch of a preset (ganray's gan_step over the preset's
training images, G_ema updated when configured) in chunks, and between chunks
times ``evaluate_generator`` with the offline backbone at each sample count,
so that both sides see the same load on a shared CPU. Reported per count:

- cold_s: first evaluation (reference statistics computed and cached);
- warm_s: median later evaluation with backbone and dataset passed in (what an
  evaluation costs once the loop keeps them);
- warm_plain_s: the call as ganray.train.loop makes it today (backbone rebuilt,
  train split re-read for its dataset_id on every evaluation).

Target: warm FID at the default sample count (10k) <= 10% of a quickstart epoch.
On a CPU shared with other jobs, ``--threads 1`` gives stable figures (two
torch threads on two busy cores stall on synchronisation, the training step
with its many small ops far more than the evaluation); Ray CPU workers also
run with one thread per reserved CPU.

    .venv/bin/python benchmarks/fid_cost.py [--presets quickstart dcgan] [--samples 2000 10000]

Prints the JSON and writes benchmarks/results/fid_cost.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _results import write_result  # benchmarks/ is on sys.path when a script runs

from ganray.config import Config, load_config
from ganray.data import build_dataset, train_val_split
from ganray.metrics import build_backbone, evaluate_generator
from ganray.models import build_models
from ganray.optim import build_optimizers
from ganray.storage import Storage
from ganray.train.batches import Batches
from ganray.train.distributed import DistContext
from ganray.train.step import GanState, gan_step

RESULTS = Path(__file__).parent / "results" / "fid_cost.json"


def build_state(cfg: Config) -> GanState:
    torch.manual_seed(cfg.train.seed)
    G, D = build_models(cfg.model)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.train.ema_decay > 0 else None
    opt_g, opt_d = build_optimizers(G, D, cfg.optim)
    return GanState(
        G=G, D=D, opt_g=opt_g, opt_d=opt_d, G_ema=G_ema, noise=torch.Generator().manual_seed(cfg.train.seed)
    )


class FidTimer:
    """Times evaluate_generator for one preset at several sample counts."""

    def __init__(self, cfg: Config, cache: str) -> None:
        self.cfg, self.cache, self.storage = cfg, cache, Storage()
        self.backbone = build_backbone("fashion-mnist-classifier", cfg.metrics, self.storage)
        self.dataset = build_dataset(cfg.data, "train")
        self.warm: dict[int, list[float]] = {}
        self.plain: dict[int, list[float]] = {}
        self.cold: dict[int, float] = {}
        self.fid: dict[int, float] = {}  # before training (the cold run)
        self.last_fid: dict[int, float] = {}  # after the last chunk, i.e. after one epoch

    def _metrics(self, n: int) -> Any:
        m = copy.deepcopy(self.cfg.metrics)
        m.num_samples, m.backbone = n, "fashion-mnist-classifier"
        return m

    def run(self, G: torch.nn.Module, n: int, plain: bool = False) -> None:
        m, data = self._metrics(n), self.cfg.data
        kw = {} if plain else {"backbone": self.backbone, "dataset": self.dataset}
        t0 = time.perf_counter()
        out = evaluate_generator(G, m, data, self.storage, self.cache, "cpu", **kw)
        dt = time.perf_counter() - t0
        if n not in self.cold:
            self.cold[n], self.fid[n] = dt, out["fid"]
        else:
            (self.plain if plain else self.warm).setdefault(n, []).append(dt)
            self.last_fid[n] = out["fid"]


def measure(cfg: Config, samples: list[int], chunks: int) -> dict[str, Any]:
    ctx = DistContext(device=torch.device("cpu"))
    state = build_state(cfg)
    data = build_dataset(cfg.data, "train")
    train, _ = train_val_split(data, cfg.data.val_fraction, cfg.train.seed)
    batches = Batches(data.images_uint8, list(train.indices), cfg.train.batch_size, cfg.train.seed, ctx)
    G = lambda: state.G_ema if state.G_ema is not None else state.G  # noqa: E731 - evaluated model
    with tempfile.TemporaryDirectory() as cache:
        timer = FidTimer(cfg, cache)
        for n in samples:
            timer.run(G(), n)  # cold: computes and caches the reference
        steps, every = len(batches), max(1, len(batches) // chunks)
        chunk_s, t0 = [], time.perf_counter()
        for i, real in enumerate(batches.epoch(0)):
            gan_step(state, real, cfg.train, cfg.optim, ctx)
            if (i + 1) % every == 0 or i + 1 == steps:
                chunk_s.append(time.perf_counter() - t0)
                for n in samples:  # interleaved with training: same load on both sides
                    timer.run(G(), n)
                    timer.run(G(), n, plain=True)
                t0 = time.perf_counter()
    epoch_s = sum(chunk_s)
    fid = {}
    for n in samples:
        warm, plain = statistics.median(timer.warm[n]), statistics.median(timer.plain[n])
        fid[str(n)] = {
            "fid_before_training": timer.fid[n], "fid_after_epoch": timer.last_fid[n], "cold_s": timer.cold[n], "warm_s": warm, "warm_all_s": timer.warm[n],
            "warm_plain_s": plain, "warm_ratio_to_epoch": warm / epoch_s, "cold_ratio_to_epoch": timer.cold[n] / epoch_s,
            "warm_plain_ratio_to_epoch": plain / epoch_s,
        }  # fmt: skip
    return {"epoch_s": epoch_s, "epoch_steps": steps, "epoch_images": steps * cfg.train.batch_size,
            "model": vars(cfg.model), "data_subset": cfg.data.subset, "fid": fid}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["quickstart"])
    p.add_argument("--samples", nargs="+", type=int, default=[2000, 10000])
    p.add_argument("--chunks", type=int, default=3, help="evaluations interleaved with the epoch")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0 = torch's default); 1 is robust on a busy CPU",
    )
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(),
        "backbone": "fashion-mnist-classifier", "target": "warm FID at 10000 samples <= 0.10 x one quickstart epoch",
        "presets": {},
    }  # fmt: skip
    for preset in args.presets:
        out["presets"][preset] = measure(load_config(preset), args.samples, args.chunks)
    out["load_avg_end"] = os.getloadavg()
    q = out["presets"].get("quickstart", {}).get("fid", {}).get("10000")
    if q:
        out["quickstart_fid10k_warm_ratio"] = q["warm_ratio_to_epoch"]
        out["meets_target"] = q["warm_ratio_to_epoch"] <= 0.10
    write_result(out, args.out)


if __name__ == "__main__":
    main()
