"""Feature throughput: ganray's extractor vs pytorch-fid's get_activations, same backbone, same images.

Two backbones:
- inception: the FID InceptionV3 with random weights (the real file is not
  downloadable here; speed does not depend on the values), 256 Fashion-MNIST
  test images at 32 px, resized to 299 px inside both;
- fashion-mnist-classifier: the shipped offline backbone (one module object
  shared by both paths) on 5000 images.

pytorch-fid's get_activations reads image files (PNG decode in a DataLoader
worker, its default num_workers=1); ganray streams from the in-memory uint8
dataset. To separate pipeline from network, pytorch-fid's model is also timed
on in-memory tensors ("model_only"). Each timing is the best of --repeats,
interleaved so that load on a shared CPU hits both sides alike. The features of
both paths are compared too (max relative difference).

    .venv/bin/python benchmarks/feature_throughput.py [--repeats 2]

Prints the JSON and writes benchmarks/results/feature_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from _results import write_result  # benchmarks/ is on sys.path when a script runs
from PIL import Image
from pytorch_fid import fid_score
from pytorch_fid import inception as pfi
from torch import nn

from ganray.config import DataConfig, MetricsConfig
from ganray.data import build_dataset
from ganray.metrics import build_backbone
from ganray.metrics.features import extract, uint8_batches
from ganray.metrics.inception import WEIGHTS_FILE, fid_inception_skeleton

RESULTS = Path(__file__).parent / "results" / "feature_throughput.json"


class _PFIDAdapter(nn.Module):
    """What get_activations expects: RGB in [0, 1] -> [features [N, D, 1, 1]]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.net(2 * x - 1)[0][:, :, None, None]]


def _write_pngs(images: torch.Tensor, folder: str) -> list[str]:
    files = []
    for i, img in enumerate(images):
        path = os.path.join(folder, f"{i:05d}.png")
        Image.fromarray(img[0].numpy()).save(path)
        files.append(path)
    return files


def _best(
    fns: dict[str, Callable[[], np.ndarray]], repeats: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best-of-``repeats`` seconds per function, interleaved; and each one's last output."""
    best = {k: float("inf") for k in fns}
    outs: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, outs


def _case(name: str, backbone, pfid_model: nn.Module, images: torch.Tensor, batch: int, repeats: int) -> dict:  # noqa: ANN001
    n = len(images)
    with tempfile.TemporaryDirectory() as folder:
        files = _write_pngs(images, folder)
        pfid_model.eval()

        def model_only() -> np.ndarray:
            out = []
            with torch.no_grad():
                for s in range(0, n, batch):
                    x = images[s : s + batch].float().div(255).expand(-1, 3, -1, -1)
                    out.append(pfid_model(x)[0].flatten(1).numpy())
            return np.concatenate(out)

        fns = {
            "ganray": lambda: extract(uint8_batches(images, np.arange(n), batch), backbone).features,
            "pytorch_fid_get_activations": lambda: fid_score.get_activations(
                files, pfid_model, batch_size=batch, dims=backbone.feature_dim, device="cpu", num_workers=1
            ),
            "pytorch_fid_model_only": model_only,
        }
        seconds, outs = _best(fns, repeats)
    ref = outs["pytorch_fid_get_activations"]
    rate = {k: n / v for k, v in seconds.items()}
    return {
        "backbone": name,
        "images": n,
        "batch_size": batch,
        "seconds": seconds,
        "images_per_s": rate,
        "ratio_vs_get_activations": rate["ganray"] / rate["pytorch_fid_get_activations"],
        "ratio_vs_model_only": rate["ganray"] / rate["pytorch_fid_model_only"],
        "max_rel_feature_diff": float(np.abs(outs["ganray"] - ref).max() / np.abs(ref).max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--inception-images", type=int, default=256)
    p.add_argument("--classifier-images", type=int, default=5000)
    p.add_argument(
        "--cases", nargs="+", default=["inception", "classifier"], choices=["inception", "classifier"]
    )
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    test = build_dataset(DataConfig(), "test")
    out = {"torch_threads": torch.get_num_threads(), "load_avg_start": os.getloadavg(), "cases": []}

    if "inception" in args.cases:
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            weights = os.path.join(tmp, WEIGHTS_FILE)
            torch.save(fid_inception_skeleton().state_dict(), weights)
            ours = build_backbone("inception", MetricsConfig(backbone="inception", inception_weights=weights))
            with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: torch.load(weights)):
                theirs = pfi.InceptionV3([3])
        images = test.images_uint8[: args.inception_images]
        out["cases"].append(
            _case("inception (random weights)", ours.to("cpu"), theirs, images, 50, args.repeats)
        )
    if "classifier" in args.cases:
        offline = build_backbone("fashion-mnist-classifier", MetricsConfig()).to("cpu")
        images = test.images_uint8[: args.classifier_images]
        out["cases"].append(
            _case("fashion-mnist-classifier", offline, _PFIDAdapter(offline.net), images, 250, args.repeats)
        )
    out["load_avg_end"] = os.getloadavg()
    out["target"] = "ratio_vs_get_activations >= 1.0"
    write_result(out, args.out)


if __name__ == "__main__":
    main()
