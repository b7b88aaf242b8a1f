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
offline backbone of the dataset (for prepared parquet shards: of the dataset
their manifest says they were made from). A search or a run resolves ``auto``
once, before training, and writes the concrete name into its config
(``pin_backbone``: ``<name>@<weights hash>``), so every trial, node and epoch is
scored by the same network with the same weights.

The registry is filled at import: the networks live in classifier.py and
inception.py, which import only backbone_types.py, so there is no import cycle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ganray.config import DataConfig, MetricsConfig
from ganray.metrics import classifier, inception
from ganray.metrics.backbone_types import (
    Backbone,
    BackboneError,
    sha256_hex,
    to_channels,
    to_resolution,
)
from ganray.storage import Storage

__all__ = [
    "Backbone",
    "BackboneError",
    "build_backbone",
    "describe",
    "list_backbones",
    "offline_backbone_for",
    "load_pinned_backbone",
    "pin_backbone",
    "pinned_record",
    "register_backbone",
    "resolve_backbone_name",
    "score_label",
    "sha256_hex",
    "split_pin",
    "to_channels",
    "to_resolution",
]

# ----------------------------------------------------------------- registry

Builder = Callable[[MetricsConfig, Storage], Backbone]
# A pinned backbone: a name or URI plus the 12-hex hash of the weights it must have.
_PINNED = re.compile(r"(?P<name>.+)@(?P<tag>[0-9a-f]{12})")
# name -> builder(cfg, storage) -> Backbone. Filled at import time only: the shipped
# networks here, extensions through @register_backbone.
_BACKBONES: dict[str, Builder] = {
    "inception": inception.build_inception,
    "fashion-mnist-classifier": classifier.build_fashion_mnist_classifier,
}


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


def _dataset_kind(data: DataConfig | str, storage: Storage | None) -> str:
    """The source whose offline backbone fits ``data``: parquet shards name theirs in the manifest."""
    if isinstance(data, str):
        return data
    if data.source != "parquet":
        return data.source
    from ganray.data.geometry import origin_of

    return origin_of(data, storage or Storage()).source


def resolve_backbone_name(
    cfg: MetricsConfig, data: DataConfig | str = "", storage: Storage | None = None
) -> str:
    """Turn ``metrics.backbone`` (possibly 'auto') into a concrete registry name or URI.

    ``data`` is the run's DataConfig (or just its source name); for parquet shards
    the manifest on ``storage`` says which dataset they were prepared from.
    """
    if cfg.backbone != "auto":
        return cfg.backbone
    if inception.inception_weights_available(cfg):
        return "inception"
    kind = _dataset_kind(data, storage)
    offline = offline_backbone_for(kind)
    if offline:
        return offline
    where = f"--dataset {kind or '<source>'}"
    if isinstance(data, DataConfig) and data.uri:
        where = f"--dataset {data.source} --data-uri {data.uri}"
    raise BackboneError(
        f"metrics.backbone=auto: no Inception weights (set metrics.inception_weights to the URI of "
        f"{inception.WEIGHTS_FILE}) and no offline backbone for dataset {kind!r}. Train one with "
        f"`python -m ganray.metrics train-backbone {where} --out <uri>.pt` and set "
        f"metrics.backbone to that URI. Registered backbones: {', '.join(list_backbones())}"
    )


def build_backbone(
    name: str,
    cfg: MetricsConfig | None = None,
    storage: Storage | None = None,
    *,
    dataset_source: str = "",
    data: DataConfig | None = None,
) -> Backbone:
    """Build a backbone by registry name, 'auto' (needs ``data`` or ``dataset_source``) or a classifier URI (.pt)."""
    cfg = cfg or MetricsConfig()
    storage = storage or Storage()
    if name == "auto":
        name = resolve_backbone_name(cfg, data if data is not None else dataset_source, storage)
    base, tag = split_pin(name)
    if base.endswith(".pt"):
        backbone = classifier.load_classifier_backbone(base, storage)
    elif base in _BACKBONES:
        backbone = _BACKBONES[base](cfg, storage)
    else:
        raise BackboneError(
            f"metrics.backbone={name!r} is not registered; choose auto, one of "
            f"{', '.join(list_backbones())}, or the URI of a classifier .pt made by train-backbone"
        )
    if tag and backbone.weights_tag != tag:
        raise BackboneError(
            f"metrics.backbone={name!r} pins {base} weights {tag}, but the weights here hash to "
            f"{backbone.weights_tag}; give this node the same weights file (metrics.inception_weights) "
            f"or start a new run or search"
        )
    return backbone


def split_pin(name: str) -> tuple[str, str]:
    """'inception@3f1c2a9b0d1e' -> ('inception', '3f1c2a9b0d1e'); a name without a pin -> (name, '')."""
    m = _PINNED.fullmatch(name)
    return (m["name"], m["tag"]) if m else (name, "")


def pin_backbone(metrics: MetricsConfig, data: DataConfig, storage: Storage) -> tuple[str, Backbone]:
    """Resolve ``metrics.backbone`` once and prove it loads here: (pinned name, the backbone).

    The pinned name is ``<name>@<weights hash>`` (e.g. ``inception@3f1c2a9b0d1e``).
    A search driver and ``ganray.train`` call this before any training and write
    it into every config, so no trial, node or resumed epoch picks another network
    or other weights.
    """
    name = resolve_backbone_name(metrics, data, storage)
    backbone = build_backbone(name, metrics, storage)
    return f"{split_pin(name)[0]}@{backbone.weights_tag}", backbone


def load_pinned_backbone(name: str, cfg: MetricsConfig, storage: Storage, data: DataConfig) -> Backbone:
    """Build the backbone a run is pinned to; if this node cannot, say so (never pick another)."""
    import socket

    try:
        return build_backbone(name, cfg, storage, data=data)
    except BackboneError as e:
        pinned = "" if name == "auto" else f"this run is scored by metrics.backbone={name!r}, but "
        raise BackboneError(f"{pinned}node {socket.gethostname()} cannot load it: {e}") from None


def pinned_record(name: str, backbone: Backbone) -> dict[str, Any]:
    """What best.json and results.parquet record about a search's backbone."""
    return {
        "metrics.backbone": name,
        **describe(backbone),
        "fid_backbone_weights": backbone.weights_tag,
        "fid_label": score_label("FID", backbone.name, backbone.is_inception),
    }


def describe(backbone: Backbone) -> dict[str, Any]:
    """What a result records about its backbone."""
    return {"fid_backbone": backbone.name, "fid_backbone_is_inception": backbone.is_inception}


def score_label(metric: str, backbone_name: str, is_inception: bool) -> str:
    """Report label: 'FID' for Inception, 'FID [fashion-mnist-classifier]' otherwise."""
    return metric if is_inception else f"{metric} [{backbone_name}]"
