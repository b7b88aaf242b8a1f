"""Ray Train harness cost, measured in one run on this machine.

(a) images/s of a 1-worker Ray Train trial relative to the plain in-process
    loop on the same config (an epoch of >= 60 s, so per-epoch costs show);
(b) fixed per-trial start-up seconds (wall time minus time spent in epochs);
(c) 2-worker vs 1-worker throughput (DDP over gloo on this machine's cores).

The 1-worker trial gets all of the machine's CPUs (cpus_per_worker = nproc)
so it has the same torch threads as the in-process run; the 2-worker trial
gets nproc / 2 each.

Usage: python benchmarks/ray_train.py [--subset 24000]
Writes benchmarks/results/ray_train.json (target for (a): ratio >= 0.9).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _results import write_result  # benchmarks/ is on sys.path when a script runs

from ganray.config import load_config
from ganray.train.loop import Trainer

OUT = Path(__file__).parent / "results" / "ray_train.json"


def config(root: str, subset: int, workers: int, cpus: float, name: str):
    return load_config(
        "quickstart",
        [
            f"storage.uri={root}",
            f"storage.run_name={name}",
            f"data.subset={subset}",
            "train.epochs=1",
            "metrics.fid=false",
            "data.val_fraction=0",
            f"train.workers={workers}",
            f"train.cpus_per_worker={cpus}",
        ],
    )


def in_process(cfg) -> dict:
    t0 = time.perf_counter()
    row = Trainer(cfg).fit()[-1]
    return {"wall_s": time.perf_counter() - t0, "epoch_s": row["epoch_seconds"], "img_s": row["images_per_s"]}


def ray_trial(cfg) -> dict:
    from ganray.train.ray_trial import run_trial

    t0 = time.perf_counter()
    row = run_trial(cfg)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "epoch_s": row["epoch_seconds"],
        "img_s": row["images_per_s"],
        "startup_s": wall - row["epoch_seconds"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--subset", type=int, default=24000, help="training images per epoch")
    args = p.parse_args()
    import ray

    from ganray.train.ray_trial import start_local_ray

    ncpu = os.cpu_count() or 2
    start_local_ray(num_cpus=ncpu, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as root:
        local = in_process(config(root, args.subset, 1, ncpu, "local"))
        one = ray_trial(config(root, args.subset, 1, ncpu, "ray1"))
        two = ray_trial(config(root, args.subset, 2, ncpu / 2, "ray2"))
    ray.shutdown()
    result = {
        "benchmark": "ray_train_harness",
        "config": {"preset": "quickstart", "subset": args.subset, "epochs": 1, "fid": False},
        "cpus": ncpu,
        "torch_threads_in_process": torch.get_num_threads(),
        "in_process": local,
        "ray_1_worker": one,
        "ray_2_workers": two,
        "a_ray1_over_in_process_img_s": round(one["img_s"] / local["img_s"], 3),
        "a_target": 0.9,
        "a_epoch_seconds": round(local["epoch_s"], 1),
        "b_startup_seconds_1_worker": round(one["startup_s"], 1),
        "b_startup_seconds_2_workers": round(two["startup_s"], 1),
        "c_2_workers_over_1_worker_img_s": round(two["img_s"] / one["img_s"], 3),
    }
    write_result(result, OUT)


if __name__ == "__main__":
    main()
