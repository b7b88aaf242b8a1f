"""Backbones against references, and metric sanity on real Fashion-MNIST.

- ganray's Inception equals pytorch-fid's FID InceptionV3 given the same weights
  (random, BN-calibrated, saved to a temp file: nothing is downloaded);
- the shipped offline backbone: checksum, size and test accuracy (full 10k test split);
- FID / KID / precision-recall behave on real data with that backbone;
- the CLI scores an image folder and a ganray checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_fid import inception as pfi
from torch import nn

from ganray.config import DataConfig, MetricsConfig, ModelConfig, load_config
from ganray.data import build_dataset
from ganray.metrics import build_backbone
from ganray.metrics.backbones import sha256_hex
from ganray.metrics.classifier import SHIPPED, sidecar_uri
from ganray.metrics.features import Extracted, extract, uint8_batches
from ganray.metrics.fid import frechet_distance
from ganray.metrics.inception import _LAYERS, fid_inception_skeleton
from ganray.metrics.kid import kernel_distance
from ganray.metrics.prdc import precision_recall
from ganray.storage import Storage

N_REAL = 2000  # images per real sample in the sanity checks (128-d features: FID bias ~1)


# ------------------------------------------------------------------ Inception


def random_fid_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random FID-Inception weights whose BatchNorm statistics keep activations O(1)."""
    torch.manual_seed(seed)
    net = fid_inception_skeleton()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # running stats = the calibration batch's stats
    net.train()
    x = torch.randn(4, 3, 96, 96)  # small calibration input; the network is fully convolutional
    with torch.no_grad():
        for name in _LAYERS:
            x = nn.functional.max_pool2d(x, 3, 2) if name == "maxpool" else getattr(net, name)(x)
    return net.state_dict()


def test_inception_features_equal_pytorch_fid_with_same_weights(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    state = random_fid_inception_state()
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    # pytorch-fid fetches its weights by URL; hand it our file instead (no network).
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: torch.load(path, weights_only=True))
    theirs_net = pfi.InceptionV3([3]).eval()

    storage, mem = Storage(), "memory://ganray-test/weights/inception.pth"
    storage.write_bytes(mem, path.read_bytes())  # also through a non-local URI
    ours = build_backbone("inception", MetricsConfig(backbone="inception", inception_weights=mem), storage)
    assert ours.name == "inception" and ours.is_inception and ours.feature_dim == 2048

    g = torch.Generator().manual_seed(0)
    grey = torch.randint(0, 256, (2, 1, 32, 32), generator=g).float() / 127.5 - 1
    rgb = torch.randint(0, 256, (2, 3, 32, 32), generator=g).float() / 127.5 - 1
    for x in (grey, rgb):
        f_ours, logits = ours.forward_all(x)
        with torch.no_grad():  # pytorch-fid takes RGB in [0, 1] (grey repeated, as PIL's convert('RGB'))
            f_theirs = theirs_net((x.expand(-1, 3, -1, -1) + 1) / 2)[0].flatten(1)
        assert f_ours.shape == (2, 2048) and logits.shape == (2, 1008)
        assert f_theirs.abs().max() > 1e-2  # calibrated: the comparison is not between zeros
        err = (f_ours - f_theirs).abs().max() / f_theirs.abs().max()
        assert err < 1e-4, f"relative feature difference {err}"


# ---------------------------------------------------------- shipped backbone


@pytest.fixture(scope="module")
def fmnist() -> tuple:
    return build_dataset(DataConfig(), "train"), build_dataset(DataConfig(), "test")


@pytest.fixture(scope="module")
def shipped():  # noqa: ANN201
    return build_backbone("fashion-mnist-classifier", MetricsConfig())


def test_shipped_backbone_checksum_size_and_provenance() -> None:
    path = SHIPPED["fashion-mnist-classifier"]
    meta = json.loads(Path(sidecar_uri(str(path))).read_text())
    assert sha256_hex(path.read_bytes()) == meta["sha256"]
    assert path.stat().st_size < 2_000_000
    assert meta["train_split"] == "train" and meta["eval_split"] == "test" and meta["train_images"] == 60000
    assert meta["command"].startswith("python -m ganray.metrics train-backbone --dataset fashion-mnist")
    assert meta["test_accuracy"] >= 0.90 and meta["feature_dim"] == 128


def test_shipped_backbone_test_accuracy(fmnist, shipped) -> None:  # noqa: ANN001
    _, test = fmnist  # the full 10k test split, never seen in training
    correct = 0
    for start in range(0, len(test), 1000):
        x = test.images_uint8[start : start + 1000].float() / 127.5 - 1
        correct += int((shipped.logits(x).argmax(1) == test.labels[start : start + 1000]).sum())
    acc = correct / len(test)
    meta = json.loads(Path(sidecar_uri(str(SHIPPED["fashion-mnist-classifier"]))).read_text())
    assert acc >= 0.90
    assert acc == pytest.approx(meta["test_accuracy"], abs=0.002)  # BN folding changes nothing material


def _bn(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    """Inference BatchNorm from a state dict: (x - mean) / sqrt(var + 1e-5) * weight + bias."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = sd[prefix + "running_mean"].view(shape), sd[prefix + "running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + 1e-5) * sd[prefix + "weight"].view(shape) + sd[prefix + "bias"].view(
        shape
    )


def reference_classifier(x: torch.Tensor, sd: dict, arch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented network, from the raw (unfused) weight file with torch.nn.functional:
    conv3x3-BN-ReLU stages (stride-2 stem, else a 2x2 max-pool), linear + BN = features,
    ReLU + linear = logits."""
    i = 0
    for stage in range(len(arch["widths"])):
        stride = arch["stem_stride"] if stage == 0 else 1
        x = F.relu(_bn(F.conv2d(x, sd[f"body.{i}.weight"], stride=stride, padding=1), sd, f"body.{i + 1}."))
        i += 3
        if stride == 1:
            x, i = F.max_pool2d(x, 2), i + 1
    features = _bn(x.flatten(1) @ sd["embed.1.weight"].T, sd, "embed.2.")
    return features, F.relu(features) @ sd["head.2.weight"].T + sd["head.2.bias"]


def test_shipped_backbone_values_equal_an_independent_forward(fmnist, shipped) -> None:  # noqa: ANN001
    blob = torch.load(SHIPPED["fashion-mnist-classifier"], map_location="cpu", weights_only=True)
    sd = {k: v.double() for k, v in blob["state_dict"].items()}  # float64: the reference is exact
    grey = fmnist[1].images_uint8[:64].double() / 127.5 - 1  # real test images, [-1, 1]
    # RGB input is reduced to grey by ITU-R 601 luma first: tinted copies of the same images.
    rgb = torch.cat([grey * 0.9, grey, grey * 1.1], dim=1).clamp(-1, 1)
    luma = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    want = reference_classifier(grey, sd, blob["arch"])
    assert want[0].std() > 0.1  # the comparison is not between near-constant vectors
    for x, expected in ((grey, want), (rgb, reference_classifier(luma, sd, blob["arch"]))):
        got = shipped.forward_all(x.float())
        for g, e in zip(got, expected):  # features, then logits
            torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-4)
    # The logits classify: most of these real test images get their true label.
    assert (want[1].argmax(1) == fmnist[1].labels[:64]).float().mean() > 0.85


# ------------------------------------------------------ sanity on real data


@pytest.fixture(scope="module")
def real_features(fmnist, shipped) -> dict[str, Extracted]:  # noqa: ANN001
    train, test = fmnist
    idx = np.sort(np.random.default_rng(0).choice(len(train), N_REAL, replace=False))
    g = torch.Generator().manual_seed(1)

    def noisy(sigma: float):  # noqa: ANN202 - test images + N(0, sigma^2) in [-1, 1] units
        for b in uint8_batches(test.images_uint8, np.arange(N_REAL), 500):
            yield (b + sigma * torch.randn(b.shape, generator=g)).clamp(-1, 1)

    out = {"train": extract(uint8_batches(train.images_uint8, idx, 500), shipped)}
    for sigma in (0.0, 0.1, 0.2, 0.4):
        out[f"test+{sigma}"] = extract(noisy(sigma), shipped)
    out["noise"] = extract((torch.rand(500, 1, 32, 32, generator=g) * 2 - 1 for _ in range(4)), shipped)
    return out


def _fid(a: Extracted, b: Extracted) -> float:
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def test_fid_real_vs_real_far_below_real_vs_noise_and_monotonic_in_noise(real_features) -> None:  # noqa: ANN001
    f = real_features
    real_real, real_noise = _fid(f["train"], f["test+0.0"]), _fid(f["train"], f["noise"])
    assert real_real < 0.05 * real_noise  # measured: ~1.2 vs ~280
    ladder = [_fid(f["train"], f[f"test+{s}"]) for s in (0.0, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(ladder, ladder[1:])), ladder


def test_kid_near_zero_and_precision_recall_near_one_for_real_vs_real(real_features) -> None:  # noqa: ANN001
    a, b, noise = real_features["train"], real_features["test+0.0"], real_features["noise"]
    kid_real, _ = kernel_distance(a.features, b.features, num_subsets=50)
    kid_noise, _ = kernel_distance(a.features, noise.features, num_subsets=50)
    assert abs(kid_real) < 0.02 and abs(kid_real) < 0.01 * kid_noise  # measured: ~0.004 vs ~10
    # k=3 manifolds of two finite samples of one distribution cover each other ~85%, not 100%.
    precision, recall = precision_recall(a.features, b.features)
    assert precision > 0.8 and recall > 0.8
    assert precision_recall(a.features, noise.features)[1] < 0.05


# ------------------------------------------------------------------------ CLI


def _run_cli(capsys, argv: list[str]) -> dict:  # noqa: ANN001
    from ganray.metrics.cli import main

    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_fid_on_image_folder(tmp_path, capsys, fmnist, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # 'auto' -> offline backbone
    folder = tmp_path / "images"
    folder.mkdir()
    for i, img in enumerate(fmnist[1].images_uint8[:120]):
        Image.fromarray(img[0].numpy()).save(folder / f"{i:04d}.png")
    out = _run_cli(
        capsys,
        [
            "fid",
            "--images",
            str(folder),
            "--dataset",
            "fashion-mnist",
            "--num-samples",
            "120",
            "--storage",
            str(tmp_path / "runs"),
            "--kid",
            "--is",
        ],
    )
    assert (
        out["fid_backbone"] == "fashion-mnist-classifier"
        and out["fid_label"] == "FID [fashion-mnist-classifier]"
    )
    assert out["fid_num_samples"] == 120 and out["fid"] > 0 and out["is"] > 1
    assert os.listdir(tmp_path / "runs" / "_cache" / "fid-stats")  # reference cached for the next call


def test_cli_fid_on_checkpoint_uses_its_config(tmp_path, capsys, monkeypatch) -> None:  # noqa: ANN001
    from ganray.checkpoint import save_checkpoint
    from ganray.models import build_models

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = load_config("quickstart", ["metrics.num_samples=100"])
    G, _ = build_models(ModelConfig(**{**cfg.to_dict()["model"]}))
    uri = save_checkpoint(
        Storage(),
        str(tmp_path / "run"),
        {"epoch": 1, "config": cfg.to_dict(), "G": G.state_dict(), "G_ema": G.state_dict()},
        {},
    )
    out = _run_cli(capsys, ["fid", "--checkpoint", uri, "--storage", str(tmp_path / "runs"), "--pr"])
    assert out["fid_num_samples"] == 100 and out["fid_backbone"] == "fashion-mnist-classifier"
    assert out["fid"] > 0 and 0 <= out["precision"] <= 1 and out["source"] == uri


def test_inception_weights_url_is_pytorch_fids() -> None:
    from ganray.metrics.inception import WEIGHTS_URL

    assert WEIGHTS_URL == pfi.FID_WEIGHTS_URL
