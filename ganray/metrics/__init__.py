"""Evaluation metrics: FID (the search objective), KID, precision/recall, IS, PPL.

One file per metric (fid.py, kid.py, prdc.py, isc.py, ppl.py), feature networks
behind one registry (backbones.py: Inception, offline classifiers), reference
statistics cached on storage (reference.py), and ``evaluate_generator`` which
the training loop calls on evaluation epochs (evaluate.py).
"""

from ganray.metrics.backbones import (
    Backbone,
    BackboneError,
    build_backbone,
    list_backbones,
    register_backbone,
    resolve_backbone_name,
    score_label,
)
from ganray.metrics.evaluate import evaluate_generator, evaluate_images, register_metric
from ganray.metrics.features import compute_image_stats
from ganray.metrics.fid import frechet_distance
from ganray.metrics.reference import reference_stats

__all__ = [
    "Backbone",
    "BackboneError",
    "build_backbone",
    "compute_image_stats",
    "evaluate_generator",
    "evaluate_images",
    "frechet_distance",
    "list_backbones",
    "reference_stats",
    "register_backbone",
    "register_metric",
    "resolve_backbone_name",
    "score_label",
]
