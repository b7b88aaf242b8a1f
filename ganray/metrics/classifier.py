"""The offline backbone: a small CNN classifier trained by ganray itself.

Its penultimate layer (global-average-pooled last conv block, 128-d) gives the
features for FID/KID/precision-recall, its logits the Inception Score. It lets
FID run on machines without the Inception weights; such scores are labelled
with the backbone's name and are not comparable with Inception FIDs.

A backbone file is ``torch.save({"format", "arch", "state_dict"})`` (no pickled
classes) with a JSON sidecar (same name, .json) holding its sha256, test
accuracy and the command that made it. Loading verifies the checksum.
"""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ganray.config import MetricsConfig
from ganray.metrics.backbone_types import (
    Backbone,
    BackboneError,
    sha256_hex,
    to_channels,
    to_resolution,
)
from ganray.storage import Storage

FORMAT = "ganray-backbone/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {"fashion-mnist-classifier": WEIGHTS_DIR / "fashion_mnist_classifier.pt"}


@dataclass
class ClassifierArch:
    """Shape of the classifier; stored in the weight file."""

    channels: int = 1  # input channels the net was trained on
    resolution: int = 32  # input side in pixels
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)  # conv channels per stage (each stage halves the side)
    feature_dim: int = 128  # size of the penultimate layer = the FID features
    stem_stride: int = 2  # the first stage halves the side with a strided conv instead of a max-pool


class FeatureClassifier(nn.Module):
    """conv3x3-BN-ReLU stages that halve the side, a linear embedding (the features), a linear head.

    Small on purpose: features for 10k images must cost a fraction of a
    training epoch. The first stage is a stride-2 conv because a full-resolution
    32-channel map and its max-pool are memory-bound and cost more than the rest
    of the net. The features are the embedding after BatchNorm and before the
    ReLU, so no dimension is constantly zero (a singular covariance would make
    FID ill-posed).
    """

    def __init__(self, arch: ClassifierArch) -> None:
        super().__init__()
        self.arch = arch
        layers: list[nn.Module] = []
        c = arch.channels
        for i, w in enumerate(arch.widths):
            stride = arch.stem_stride if i == 0 else 1
            layers += [
                nn.Conv2d(c, w, 3, stride, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            if stride == 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.body = nn.Sequential(*layers)
        side = arch.resolution // 2 ** len(arch.widths)
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * side * side, arch.feature_dim, bias=False),
            nn.BatchNorm1d(arch.feature_dim),
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(0.3), nn.Linear(arch.feature_dim, arch.num_classes))

    def fuse_(self) -> FeatureClassifier:
        """Fold each conv's BatchNorm into it (inference only; same function, fewer passes)."""
        out: list[nn.Module] = []
        for layer in self.body:
            if isinstance(layer, nn.BatchNorm2d) and out and isinstance(out[-1], nn.Conv2d):
                out[-1] = fuse_conv_bn_eval(out[-1].eval(), layer.eval())
            else:
                out.append(layer)
        self.body = nn.Sequential(*out)
        return self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1] (any size/channels) -> (features [N, feature_dim], logits [N, num_classes])."""
        x = to_resolution(to_channels(x, self.arch.channels), self.arch.resolution)
        # A 1-channel input makes channels_last ambiguous and the stem's output falls back
        # to NCHW; making it channels_last speeds every later conv and pool (~30% on CPU).
        h = self.body[0](x).contiguous(memory_format=torch.channels_last)
        f = self.embed(self.body[1:](h))
        return f, self.head(f)


# -------------------------------------------------------------- file format


def sidecar_uri(uri: str) -> str:
    return uri[: -len(".pt")] + ".json" if uri.endswith(".pt") else uri + ".json"


def classifier_bytes(net: FeatureClassifier) -> bytes:
    buf = io.BytesIO()
    arch = {**asdict(net.arch), "widths": list(net.arch.widths)}
    torch.save({"format": FORMAT, "arch": arch, "state_dict": net.state_dict()}, buf)
    return buf.getvalue()


def save_classifier(
    net: FeatureClassifier, uri: str, storage: Storage, info: dict[str, Any]
) -> dict[str, Any]:
    """Write the weights and the sidecar (sha256 + ``info``); return the sidecar."""
    data = classifier_bytes(net)
    meta = {
        "file": posixpath.basename(uri),
        "sha256": sha256_hex(data),
        "format": FORMAT,
        "feature_dim": net.arch.feature_dim,
        **info,
    }
    storage.write_bytes(uri, data)
    storage.write_text(sidecar_uri(uri), json.dumps(meta, indent=2) + "\n")
    return meta


def load_classifier(uri: str, storage: Storage) -> tuple[FeatureClassifier, dict[str, Any]]:
    """Load and checksum-verify a classifier; return (net in eval mode, sidecar)."""
    side = sidecar_uri(uri)
    if not storage.exists(uri) or not storage.exists(side):
        raise BackboneError(
            f"backbone weights {uri!r} or its sidecar {side!r} is missing; make them with "
            f"`python -m ganray.metrics train-backbone --dataset <source> --out {uri}`"
        )
    meta = json.loads(storage.read_text(side))
    data = storage.read_bytes(uri)
    actual = sha256_hex(data)
    if actual != meta.get("sha256"):
        raise BackboneError(
            f"backbone weights {uri!r} are corrupt or were replaced: sha256 {actual} != "
            f"{meta.get('sha256')} recorded in {side!r}. Re-create them with: {meta.get('command', 'train-backbone')}"
        )
    blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if blob.get("format") != FORMAT:
        raise BackboneError(f"{uri!r}: format {blob.get('format')!r}, expected {FORMAT!r}")
    missing = {f.name for f in fields(ClassifierArch)} - set(blob["arch"])
    if missing:  # a default could silently describe another network with the same weight shapes
        raise BackboneError(
            f"{uri!r}: architecture lacks {sorted(missing)}; re-create it with train-backbone"
        )
    arch = ClassifierArch(**{**blob["arch"], "widths": tuple(blob["arch"]["widths"])})
    net = FeatureClassifier(arch)
    net.load_state_dict(blob["state_dict"])
    net.requires_grad_(False).eval()
    return net, meta


def load_classifier_backbone(uri: str, storage: Storage, name: str = "") -> Backbone:
    """A verified classifier as a Backbone (BatchNorm folded, channels_last for speed)."""
    net, meta = load_classifier(uri, storage)
    return Backbone(
        name=name or meta.get("name") or posixpath.basename(uri)[: -len(".pt")],
        net=net.fuse_(),
        feature_dim=net.arch.feature_dim,
        is_inception=False,
        weights_tag=meta["sha256"][:12],
        logits_dim=net.arch.num_classes,
        channels_last=True,
    )


def build_fashion_mnist_classifier(cfg: MetricsConfig, storage: Storage) -> Backbone:
    """The classifier shipped in the package (trained on the Fashion-MNIST train split)."""
    del cfg  # nothing configurable: the shipped weights are fixed
    path = str(SHIPPED["fashion-mnist-classifier"])
    return load_classifier_backbone(path, Storage(), name="fashion-mnist-classifier")


# ------------------------------------------------------------------ training


@dataclass
class TrainSettings:
    """How train-backbone trains a classifier.

    The shipped Fashion-MNIST backbone: these defaults plus flips, 92.2% test
    accuracy after about 2 minutes on 2 CPU cores.
    """

    epochs: int = 4
    batch_size: int = 128  # images per step
    lr: float = 3e-3  # peak of the one-cycle schedule
    weight_decay: float = 5e-4
    flip: bool = False  # random horizontal flips (fine for clothes, wrong for digits/text)
    seed: int = 0


def accuracy(
    net: FeatureClassifier, images_uint8: torch.Tensor, labels: torch.Tensor, batch_size: int = 500
) -> float:
    """Top-1 accuracy on uint8 images [N, C, R, R]."""
    net.eval()
    correct = 0
    with torch.inference_mode():
        for s in range(0, len(labels), batch_size):
            x = images_uint8[s : s + batch_size].float().div(127.5).sub(1)
            correct += int((net(x)[1].argmax(1) == labels[s : s + batch_size]).sum())
    return correct / len(labels)


def _epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    ts: TrainSettings,
    gen: torch.Generator,
) -> float:
    """One pass over shuffled training images; returns the mean loss."""
    net.train()
    order = torch.randperm(len(labels), generator=gen)
    total, steps = 0.0, 0
    for s in range(0, len(order) - ts.batch_size + 1, ts.batch_size):
        idx = order[s : s + ts.batch_size]
        x = images[idx].float().div_(127.5).sub_(1).contiguous(memory_format=torch.channels_last)
        if ts.flip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
        loss = nn.functional.cross_entropy(net(x)[1], labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total, steps = total + loss.item(), steps + 1
    return total / max(steps, 1)


def train_classifier(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    ts: TrainSettings,
    arch: ClassifierArch | None = None,
    log: Any = print,
) -> FeatureClassifier:
    """Train a FeatureClassifier on uint8 images [N, C, R, R]; the global RNG state is left untouched.

    ``arch`` defaults to ClassifierArch with the images' channels, resolution and label count.
    """
    _, c, r, _ = train_images.shape
    arch = arch or ClassifierArch(c, r, int(train_labels.max()) + 1)
    steps = ts.epochs * (len(train_labels) // ts.batch_size)
    with torch.random.fork_rng():
        torch.manual_seed(ts.seed)  # weights and dropout
        net = FeatureClassifier(arch).to(memory_format=torch.channels_last)  # ~2x faster convs on CPU
        opt = torch.optim.AdamW(net.parameters(), lr=ts.lr, weight_decay=ts.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=ts.lr, total_steps=max(steps, 1))
        gen = torch.Generator().manual_seed(ts.seed)
        for epoch in range(ts.epochs):
            loss = _epoch(net, opt, sched, train_images, train_labels, ts, gen)
            log(f"train-backbone: epoch {epoch + 1}/{ts.epochs} loss {loss:.4f}")
    return net.requires_grad_(False).eval()
