"""Evaluate a generator (or a folder of images): FID and the other configured metrics.

Metrics are small functions in a registry, each switched on by one field of
MetricsConfig and computed from the same features: generated-image features
are extracted once and every feature metric reads them. PPL needs the
generator itself and runs separately.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ganray.config import DataConfig, MetricsConfig
from ganray.metrics.backbones import Backbone, build_backbone, score_label
from ganray.metrics.features import Extracted, extract, stats_of
from ganray.metrics.fid import frechet_distance
from ganray.metrics.isc import inception_score
from ganray.metrics.kid import kernel_distance
from ganray.metrics.ppl import perceptual_path_length
from ganray.metrics.prdc import precision_recall
from ganray.metrics.reference import Reference, reference_stats
from ganray.metrics.sampling import agreed, gather_rows, generated_batches, share
from ganray.storage import Storage
from ganray.train.distributed import DistContext


@dataclass
class Scored:
    """Everything a feature metric may read."""

    fake: Extracted  # generated (or given) images, all ranks' features gathered
    ref: Reference | None  # real images; None when no metric needs them
    backbone: Backbone
    seed: int


MetricFn = Callable[[Scored], dict[str, Any]]
# name -> (is it switched on in this config?, the metric, does it need reference features?).
# Filled at import time by @register_metric.
_METRICS: dict[str, tuple[Callable[[MetricsConfig], bool], MetricFn, bool]] = {}


def register_metric(
    name: str, enabled: Callable[[MetricsConfig], bool], needs_reference: bool = True
) -> Callable:
    """Decorator: register ``fn(Scored) -> dict`` as a feature metric switched on by ``enabled(cfg)``."""

    def deco(fn: MetricFn) -> MetricFn:
        _METRICS[name] = (enabled, fn, needs_reference)
        return fn

    return deco


@register_metric("fid", lambda c: c.fid)
def _fid(s: Scored) -> dict[str, Any]:
    return {"fid": frechet_distance(s.fake.mu, s.fake.sigma, s.ref.mu, s.ref.sigma)}


@register_metric("kid", lambda c: c.kid)
def _kid(s: Scored) -> dict[str, Any]:
    mean, std = kernel_distance(s.ref.features, s.fake.features, seed=s.seed)
    return {"kid": mean, "kid_std": std}


@register_metric("pr", lambda c: c.pr)
def _pr(s: Scored) -> dict[str, Any]:
    precision, recall = precision_recall(s.ref.features, s.fake.features)
    return {"precision": precision, "recall": recall}


@register_metric("is", lambda c: c.inception_score, needs_reference=False)
def _is(s: Scored) -> dict[str, Any]:
    if s.fake.logits is None:
        return {"is": None, "is_note": f"backbone {s.backbone.name} has no logits"}
    mean, std = inception_score(s.fake.logits)
    return {"is": mean, "is_std": std}


def enabled_metrics(cfg: MetricsConfig) -> list[str]:
    return [name for name, (on, _, _) in _METRICS.items() if on(cfg)]


def _gathered(ctx: DistContext, ext: Extracted, n_total: int) -> Extracted:
    """All ranks' features (and logits) in global order, with stats over all of them."""
    if not ctx.distributed:
        return ext
    feats = gather_rows(ctx, ext.features, n_total)
    logits = gather_rows(ctx, ext.logits, n_total) if ext.logits is not None else None
    mu, sigma = stats_of(feats)
    return Extracted(mu, sigma, len(feats), feats, logits)


def score_features(
    fake: Extracted,
    cfg: MetricsConfig,
    data_cfg: DataConfig,
    storage: Storage,
    cache_uri: str,
    backbone: Backbone,
    *,
    seed: int = 0,
    ctx: DistContext | None = None,
    dataset: Any = None,
) -> dict[str, Any]:
    """The configured feature metrics of already-extracted (gathered) features."""
    if fake.num_images < 2:
        raise ValueError(f"metrics need at least 2 images to compare, got {fake.num_images}")
    names = enabled_metrics(cfg)
    ref = None
    if any(_METRICS[n][2] for n in names):
        ref = reference_stats(
            data_cfg,
            backbone,
            storage,
            cache_uri,
            num_samples=cfg.num_samples,
            batch_size=cfg.batch_size,
            dataset=dataset,
            ctx=ctx,
        )
    s = Scored(fake, ref, backbone, seed)
    out: dict[str, Any] = {}

    def compute() -> None:  # the same inputs on every rank, so the same outcome
        for name in names:
            out.update(_METRICS[name][1](s))

    agreed(ctx, compute, "metrics")
    out.update(
        {
            "fid_backbone": backbone.name,
            "fid_backbone_is_inception": backbone.is_inception,
            "fid_label": score_label("FID", backbone.name, backbone.is_inception),
            "fid_num_samples": fake.num_images,
        }
    )
    if ref is not None:
        out.update({"fid_reference_images": ref.num_images, "fid_reference": ref.dataset_id})
    return out


def evaluate_generator(
    G: nn.Module,
    cfg: MetricsConfig,
    data_cfg: DataConfig,
    storage: Storage,
    cache_uri: str,
    device: torch.device | str,
    *,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    backbone: Backbone | None = None,
    dataset: Any = None,
) -> dict[str, Any]:
    """All configured metrics of ``G`` (pass G_ema when there is one); every rank returns the same dict.

    ``cfg.num_samples`` images from fixed seeds (sample i from z seeded by
    (seed, i)), no truncation, G in eval mode under no_grad (its train flags
    are restored after) and the caller's RNG state untouched. With
    ``world_size > 1`` every rank must call this; each generates its share
    and the features are all-gathered. Reference statistics of the train split
    are cached under ``cache_uri``. ``backbone`` / ``dataset`` may be passed in
    to avoid rebuilding them on every evaluation.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    ctx = DistContext(rank, world_size, device)
    backbone = (backbone or build_backbone(cfg.backbone, cfg, storage, data=data_cfg)).to(device)
    out: dict[str, Any] = {}
    if enabled_metrics(cfg):
        n = cfg.num_samples
        mine = share(n, rank, world_size)
        ext = agreed(
            ctx,
            lambda: extract(
                generated_batches(G, mine, cfg.batch_size, device, seed),
                backbone,
                keep_logits=cfg.inception_score,
            ),
            "generated-image features",
        )
        fake = _gathered(ctx, ext, n)
        out.update(
            score_features(
                fake, cfg, data_cfg, storage, cache_uri, backbone, seed=seed, ctx=ctx, dataset=dataset
            )
        )
    if cfg.ppl:
        out.update(perceptual_path_length(G, backbone, cfg.num_samples, cfg.batch_size, device, seed, ctx))
    out["eval_seconds"] = time.perf_counter() - t0
    return out


def evaluate_images(
    batches: Iterable[torch.Tensor],
    cfg: MetricsConfig,
    data_cfg: DataConfig,
    storage: Storage,
    cache_uri: str,
    device: torch.device | str = "cpu",
    *,
    backbone: Backbone | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The configured feature metrics of given images (batches in [-1, 1]); PPL needs a generator."""
    t0 = time.perf_counter()
    backbone = (backbone or build_backbone(cfg.backbone, cfg, storage, data=data_cfg)).to(device)
    fake = extract(batches, backbone, keep_logits=cfg.inception_score)
    out = score_features(fake, cfg, data_cfg, storage, cache_uri, backbone, seed=seed)
    if cfg.ppl:
        out.update({"ppl": None, "ppl_note": "PPL needs a generator (--checkpoint), not images"})
    out["eval_seconds"] = time.perf_counter() - t0
    return out


def finite_or_none(x: Any) -> Any:
    """JSON-safe value: NaN/inf become None (JSON has no NaN)."""
    if isinstance(x, float | np.floating) and not np.isfinite(x):
        return None
    return float(x) if isinstance(x, np.floating) else x
