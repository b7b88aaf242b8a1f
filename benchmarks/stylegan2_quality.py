"""Quality at an equal image budget: StyleGAN2 quickstart vs DCGAN quickstart.

Both presets (ganray/presets/stylegan2-quickstart.yaml and quickstart.yaml,
Fashion-MNIST at 32 px, 20k-image subset) are trained through ganray's Trainer
(in this process, no Ray) for the same number of training images, and scored
at each budget with the same offline FID: same backbone (the shipped
Fashion-MNIST classifier), same reference (the train split's statistics),
same number of samples from the same seeds. Each run is scored with the
generator the service scores: G_ema when the config keeps one (both presets
do: stylegan2 with a 10 kimg half-life, DCGAN with decay 0.999 per step, a
half-life of 693 steps = 89k images, so its G_ema lags early on). The raw G
is scored too (fid_G) so that lag is visible.

Budgets are multiples of 7680 images (60 steps of DCGAN's batch 128, 240 of
StyleGAN2's batch 32), so both consume exactly the same count: each "epoch"
is capped at 7680 images (train.max_steps_per_epoch) and a budget is scored
when a whole number of those has been trained. Only the presets' epoch length
and the trainer's own FID (off: this script scores) are overridden.

The presets take turns budget by budget (each budget resumes the run's
checkpoint, which is bit-exact), so a run cut short still compares both at
the same budgets. Training wall time is the time inside ``Trainer.fit`` (it
includes ganray's per-epoch validation, sample grid and checkpoint, the
same for both) and excludes scoring. The machine's load average is sampled
at each budget (the machine is shared: img/s are pessimistic). The JSON is
rewritten after every scored budget, so a cut-short run still reports.

Usage: python benchmarks/stylegan2_quality.py [--budgets 30720 61440 122880]
       [--archs quickstart stylegan2-quickstart] [--num-samples 10000]
Writes benchmarks/results/stylegan2_quality.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _results import write_result  # benchmarks/ is on sys.path when a script runs

from ganray.config import load_config
from ganray.logs import setup_logging
from ganray.metrics import build_backbone, evaluate_generator
from ganray.storage import Storage
from ganray.train.distributed import unwrap
from ganray.train.loop import Trainer

OUT = Path(__file__).parent / "results" / "stylegan2_quality.json"
CHUNK = 7680  # images per capped epoch: a multiple of both presets' batch sizes
CPU = torch.device("cpu")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Run:
    """One preset's run, trained budget by budget (each ``fit`` resumes the previous one's checkpoint)."""

    def __init__(self, preset: str, root: str) -> None:
        self.preset, self.root, self.train_s = preset, root, 0.0
        self.batch = load_config(preset).train.batch_size
        if CHUNK % self.batch:
            raise SystemExit(f"{preset}: batch {self.batch} does not divide {CHUNK}")
        cfg = self.config(CHUNK)
        self.entry: dict[str, Any] = {
            "preset": preset,
            "arch": cfg.model.arch,
            "batch_size": self.batch,
            "optim": {"lr": cfg.optim.lr, "beta1": cfg.optim.beta1, "beta2": cfg.optim.beta2},
            "scored": [],
        }

    def config(self, images: int):  # noqa: ANN201
        return load_config(
            self.preset,
            [
                f"storage.uri={self.root}",
                "storage.run_name=run",  # the same run whatever train.epochs says: each budget resumes
                f"train.epochs={images // CHUNK}",
                f"train.max_steps_per_epoch={CHUNK // self.batch}",
                "train.keep_checkpoints=1",
                "metrics.fid=false",
            ],
        )

    def train_and_score(self, images: int, args: argparse.Namespace, backbone) -> None:  # noqa: ANN001
        """Train on to ``images`` images (resuming), then score G and G_ema."""
        cfg = self.config(images)
        trainer = Trainer(cfg)
        t0 = time.perf_counter()
        history = trainer.fit()
        self.train_s += time.perf_counter() - t0
        assert trainer.images_seen == images, (trainer.images_seen, images)
        e = self.entry
        e["params_G"] = sum(p.numel() for p in unwrap(trainer.state.G).parameters())
        e["params_D"] = sum(p.numel() for p in unwrap(trainer.state.D).parameters())
        e["weights_scored"] = "G_ema" if trainer.state.G_ema is not None else "G"
        metrics = dataclasses.replace(cfg.metrics, num_samples=args.num_samples, fid=True)
        scores = {
            name: evaluate_generator(
                g, metrics, cfg.data, Storage(), args.cache, CPU, seed=0, backbone=backbone
            )
            for name, g in scored_generators(trainer).items()
        }
        row = history[-1]
        e["scored"].append(
            {
                "images": images,
                "fid": round(scores[e["weights_scored"]]["fid"], 2),
                **{f"fid_{name}": round(s["fid"], 2) for name, s in scores.items()},
                "train_wall_s": round(self.train_s, 1),
                "train_img_per_s": round(images / self.train_s, 1),
                "eval_s": round(sum(s["eval_seconds"] for s in scores.values()), 1),
                "load_average": _load(),
                "aug_p": row.get("aug_p"),
                "d_loss": round(row["d_loss"], 4),
                "g_loss": round(row["g_loss"], 4),
            }
        )


def scored_generators(trainer: Trainer) -> dict[str, torch.nn.Module]:
    """G_ema (what the service scores) and the raw G: a slow EMA lags early in training."""
    out = {"G": unwrap(trainer.state.G)}
    if trainer.state.G_ema is not None:
        out["G_ema"] = trainer.state.G_ema
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", type=int, nargs="+", default=[30720, 61440, 122880])
    p.add_argument("--archs", nargs="+", default=["quickstart", "stylegan2-quickstart"], help="presets")
    p.add_argument("--num-samples", type=int, default=10_000, help="FID samples (and reference images)")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "ganray-fid-stats"))
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a loaded shared machine 2 threads ran 5x slower, waiting for each other)",
    )
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bad = [b for b in args.budgets if b <= 0 or b % CHUNK]
    if bad:
        raise SystemExit(f"--budgets {bad}: each must be a positive multiple of {CHUNK} images")
    setup_logging()
    backbone = build_backbone(
        "auto", load_config("quickstart").metrics, Storage(), dataset_source="fashion-mnist"
    )
    result: dict[str, Any] = {
        "benchmark": "stylegan2_quality",
        "dataset": "fashion-mnist 32 px, 20k-image subset (both presets)",
        "fid_backbone": backbone.name,
        "fid_backbone_weights": backbone.weights_tag,
        "fid_samples": args.num_samples,
        "fid_reference": "train split statistics (same for both)",
        "budgets": sorted(args.budgets),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "device": "cpu",
        "load_average_start": _load(),
        "runs": {},
    }

    with tempfile.TemporaryDirectory() as root:
        runs = [Run(preset, str(Path(root) / preset)) for preset in args.archs]
        for images in sorted(args.budgets):  # budget by budget, so a cut-short run compares like with like
            for run in runs:
                run.train_and_score(images, args, backbone)
                result["runs"][run.preset] = run.entry
                result["winner_by_budget"] = winners(result["runs"])
                write_result(result, args.out)
    result["load_average_end"] = _load()
    write_result(result, args.out)


def winners(runs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Lower FID wins at each budget both runs reached."""
    fids: dict[int, dict[str, float]] = {}
    for preset, entry in runs.items():
        for s in entry["scored"]:
            fids.setdefault(s["images"], {})[preset] = s["fid"]
    return {str(b): min(f, key=f.get) for b, f in sorted(fids.items()) if len(f) == len(runs) > 1}


if __name__ == "__main__":
    main()
