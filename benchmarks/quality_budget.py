"""Quality per budget: the quickstart search's best trial vs the plain DCGAN recipe.

The plain recipe (Radford et al. 2015, as in the PyTorch DCGAN tutorial, sized
for 32 px): ngf = ndf = 64, Adam lr 2e-4 beta1 0.5, batch 128, BCE, N(0, 0.02)
init, no EMA, trained here in plain PyTorch (its own loop, not ganray's) on
Fashion-MNIST (all 60k training images, padded to 32 px) for the same number
of training images as the search's best trial consumed up to its best
checkpoint within 2 epochs of Fashion-MNIST (120k images: if the trial's best
epoch came later, its best evaluated epoch within 120k images is used). Both generators are then scored
with ganray's offline FID (Fashion-MNIST classifier backbone) on 10k samples
against the same reference (10k images of the full training split).

ratio = FID(ours) / FID(plain); target <= 0.5.

Usage: python benchmarks/quality_budget.py --experiment DIR_OR_URI [--endpoint-url URL]
(the experiment of a finished quickstart search, e.g. from `make demo` or
benchmarks/tune_overhead.py --storage DIR). Writes benchmarks/results/quality_budget.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch
from _results import write_result  # benchmarks/ is on sys.path when a script runs
from torch import nn

OUT = Path(__file__).parent / "results" / "quality_budget.json"
MAX_IMAGES = 120_000  # 2 epochs of Fashion-MNIST


class PlainG(nn.Module):
    """DCGAN generator for 32 px: z -> 4x4x4ngf -> 8x8x2ngf -> 16x16xngf -> 32x32xC."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 1) -> None:
        super().__init__()
        self.latent_dim = nz
        self.net = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class PlainD(nn.Module):
    """DCGAN discriminator for 32 px: 32 -> 16 -> 8 -> 4 -> one logit."""

    def __init__(self, ndf: int = 64, nc: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def dcgan_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def train_plain(
    images_u8: torch.Tensor, budget: int, seed: int = 0, batch: int = 128
) -> tuple[nn.Module, dict]:
    """The plain recipe for ``budget`` training images; returns (G, stats)."""
    torch.manual_seed(seed)
    G, D = PlainG(), PlainD()
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(batch), torch.zeros(batch)
    seen, t0, epoch = 0, time.perf_counter(), 0
    while seen < budget:
        order = torch.randperm(len(images_u8), generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(0, len(order) - batch + 1, batch):
            if seen >= budget:
                break
            real = images_u8[order[i : i + batch]].float().div(127.5).sub(1.0)
            fake = G(torch.randn(batch, G.latent_dim))
            opt_d.zero_grad(set_to_none=True)
            (bce(D(real), ones) + bce(D(fake.detach()), zeros)).backward()
            opt_d.step()
            opt_g.zero_grad(set_to_none=True)
            bce(D(fake), ones).backward()
            opt_g.step()
            seen += batch
        epoch += 1
    secs = time.perf_counter() - t0
    return G.eval(), {"images": seen, "seconds": round(secs, 1), "images_per_s": round(seen / secs, 1)}


def within_budget(storage, best: dict) -> tuple[int, int, str, float]:  # noqa: ANN001
    """(epoch, images seen, checkpoint URI, search FID) of the best trial's best evaluated epoch within
    MAX_IMAGES whose checkpoint is kept: the search's best epoch unless it trained past the cap."""
    from ganray import checkpoint as ckpt
    from ganray.train import artifacts

    rows = [
        r
        for r in artifacts.read_metrics(storage, best["run_uri"])
        if r["images_seen"] <= MAX_IMAGES
        and r.get("fid") is not None
        and storage.exists(ckpt.checkpoint_uri(best["run_uri"], r["epoch"]))
    ]
    if not rows:
        raise SystemExit(
            f"trial {best['trial_id']} has no kept, evaluated checkpoint within {MAX_IMAGES} images"
        )
    row = min(rows, key=lambda r: r["fid"])
    return (
        row["epoch"],
        int(row["images_seen"]),
        ckpt.checkpoint_uri(best["run_uri"], row["epoch"]),
        row["fid"],
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True, help="a finished quickstart experiment (STORAGE/NAME)")
    p.add_argument("--endpoint-url", default="")
    p.add_argument("--num-samples", type=int, default=10_000, help="FID samples (and reference images)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()

    from ganray.config import DataConfig, MetricsConfig
    from ganray.data import build_dataset
    from ganray.inference import load_generator
    from ganray.logs import setup_logging
    from ganray.metrics import build_backbone, evaluate_generator
    from ganray.storage import Storage, join

    setup_logging()
    logging.getLogger("ganray").info("torch threads: %d", torch.get_num_threads())
    storage = Storage(args.endpoint_url)
    best = json.loads(storage.read_text(join(args.experiment, "best.json")))
    epoch, budget, uri, fid_2k = within_budget(storage, best)
    ours, cfg, which = load_generator(uri, storage)

    data = DataConfig(source="fashion-mnist", resolution=32, channels=1, subset=0)
    images = build_dataset(data, "train").images_uint8
    plain, stats = train_plain(images, budget)

    metrics = MetricsConfig(num_samples=args.num_samples, backbone="auto")
    local = Storage()
    backbone = build_backbone(metrics.backbone, metrics, local, dataset_source=data.source)
    with tempfile.TemporaryDirectory() as cache:
        fid_ours = evaluate_generator(ours, metrics, data, local, cache, "cpu", seed=0, backbone=backbone)
        fid_plain = evaluate_generator(plain, metrics, data, local, cache, "cpu", seed=0, backbone=backbone)
    result = {
        "benchmark": "quality_budget",
        "experiment": args.experiment,
        "cpus": os.cpu_count(),
        "budget_images": budget,
        "ours": {
            "trial_id": best["trial_id"],
            "epoch": epoch,
            "search_best_epoch": best["epoch"],
            "weights": which,
            "params": best["params"],
            "ngf": cfg.model.ngf,
            "ndf": cfg.model.ndf,
            "train_subset": cfg.data.subset,
            "search_fid_2k_at_epoch": fid_2k,
            "fid": fid_ours["fid"],
        },  # fmt: skip
        "plain": {
            "recipe": "DCGAN ngf=ndf=64, Adam 2e-4 beta1 0.5, batch 128, BCE, 32 px, no EMA",
            **stats,
            "fid": fid_plain["fid"],
        },  # fmt: skip
        "fid_backbone": fid_ours.get("fid_label"),
        "fid_backbone_weights": backbone.weights_tag,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "fid_samples": args.num_samples,
        "fid_reference": fid_ours.get("fid_reference"),
        "ratio_ours_over_plain": round(fid_ours["fid"] / fid_plain["fid"], 3),
        "ratio_target": 0.5,
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
