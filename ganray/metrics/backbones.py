"""Feature networks behind one registry.

A backbone maps images in [-1, 1] (any resolution, 1 or 3 channels) to a
feature vector per image (FID, KID, precision/recall, PPL fallback) and,
when it is a classifier, to logits (Inception Score). Each network converts
its input itself (channels, resolution), so callers never resize.

Registered names:
  inception                 pytorch-fid's FID InceptionV3 (pool3, 2048-d), weights from
                            metrics.inception_weights (a URI) or the torch hub cache.
  fashion-mnist-classifier  a small CNN shipped in ganray/metrics/weights/ (offline).
Any URI ending in ``.pt`` names a classifier made by ``train-backbone`` on storage.
``auto`` picks inception when its weights are available, else the shipped
offline backbone of the dataset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganray.config import MetricsConfig
from ganray.storage import Storage


class BackboneError(RuntimeError):
    """A backbone cannot be built: unknown name, missing or corrupt weights."""


@dataclass
class Backbone:
    """A feature network plus what a result must record about it.

    ``net(x)`` takes images in [-1, 1] and returns ``(features [N, D], logits [N, K] | None)``.
    """

    name: str  # recorded as fid_backbone in every result
    net: nn.Module
    feature_dim: int  # D
    is_inception: bool  # False -> scores are not comparable with published FIDs
    weights_tag: str  # short hash of the weights; part of reference-cache keys
    logits_dim: int = 0  # K, classes of the logits (0 = no logits, no Inception Score)
    channels_last: bool = False  # faster CPU/GPU convolutions

    def to(self, device: torch.device | str) -> Backbone:
        self.net.to(device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features and logits in one pass (float32, on the backbone's device)."""
        self.net.eval()
        x = x.to(self.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[0]

    def logits(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.forward_all(x)[1]


# --------------------------------------------------------------- conversion


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition (what PIL's convert('RGB') does), RGB -> grey by ITU-R 601 luma."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
        return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)
    raise BackboneError(f"cannot convert {x.shape[1]} channels to {channels}")


def to_resolution(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear resize to ``side`` x ``side`` pixels (antialiased when shrinking)."""
    if x.shape[-2:] == (side, side):
        return x
    shrink = x.shape[-1] > side
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------- registry

# name -> builder(cfg, storage) -> Backbone. Filled at import time only.
_BACKBONES: dict[str, Callable[[MetricsConfig, Storage], Backbone]] = {}


def register_backbone(name: str) -> Callable:
    """Decorator: register ``builder(cfg: MetricsConfig, storage: Storage) -> Backbone``."""

    def deco(fn: Callable[[MetricsConfig, Storage], Backbone]) -> Callable:
        _BACKBONES[name] = fn
        return fn

    return deco


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def offline_backbone_for(dataset_source: str) -> str | None:
    """The registered offline backbone for a data source (e.g. fashion-mnist), if any."""
    name = f"{dataset_source}-classifier"
    return name if name in _BACKBONES else None


def resolve_backbone_name(cfg: MetricsConfig, dataset_source: str = "") -> str:
    """Turn ``metrics.backbone`` (possibly 'auto') into a concrete registry name or URI."""
    from ganray.metrics.inception import inception_weights_available

    if cfg.backbone != "auto":
        return cfg.backbone
    if inception_weights_available(cfg):
        return "inception"
    offline = offline_backbone_for(dataset_source)
    if offline:
        return offline
    raise BackboneError(
        f"metrics.backbone=auto: no Inception weights (set metrics.inception_weights to the URI of "
        f"pt_inception-2015-12-05-6726825d.pth) and no offline backbone for dataset "
        f"{dataset_source!r}. Train one with `python -m ganray.metrics train-backbone --dataset "
        f"{dataset_source or '<source>'} --out <uri>.pt` and set metrics.backbone to that URI. "
        f"Registered backbones: {', '.join(list_backbones())}"
    )


def build_backbone(
    name: str, cfg: MetricsConfig | None = None, storage: Storage | None = None, *, dataset_source: str = ""
) -> Backbone:
    """Build a backbone by registry name, 'auto' (needs ``dataset_source``) or a classifier URI (.pt)."""
    # Imported for their registrations (they import this module, so not at the top).
    from ganray.metrics import classifier, inception  # noqa: F401

    cfg = cfg or MetricsConfig()
    storage = storage or Storage()
    if name == "auto":
        name = resolve_backbone_name(cfg, dataset_source)
    if name.endswith(".pt"):
        return classifier.load_classifier_backbone(name, storage)
    if name not in _BACKBONES:
        raise BackboneError(
            f"metrics.backbone={name!r} is not registered; choose auto, one of "
            f"{', '.join(list_backbones())}, or the URI of a classifier .pt made by train-backbone"
        )
    return _BACKBONES[name](cfg, storage)


def describe(backbone: Backbone) -> dict[str, Any]:
    """What a result records about its backbone."""
    return {"fid_backbone": backbone.name, "fid_backbone_is_inception": backbone.is_inception}


def score_label(metric: str, backbone_name: str, is_inception: bool) -> str:
    """Report label: 'FID' for Inception, 'FID [fashion-mnist-classifier]' otherwise."""
    return metric if is_inception else f"{metric} [{backbone_name}]"
