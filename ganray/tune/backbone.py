"""One FID backbone per search, chosen by the driver before any trial starts.

``metrics.backbone: auto`` would otherwise resolve in each trial's process from
that node's own hub cache, and trials scored by different networks would be
ranked against each other. The driver resolves it once, proves it loads, writes
the choice to EXPERIMENT/backbone.json (a resumed search keeps it) and puts the
pinned name, ``<name>@<weights hash>``, into every trial's config; a node that cannot load it fails its
trial with that reason (ganray.metrics.backbones.load_pinned_backbone).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ganray.storage import Storage, join

BACKBONE_FILE = "backbone.json"


def read_pinned(storage: Storage, experiment_uri: str) -> dict[str, Any]:
    """The experiment's backbone record ({} when none was pinned, e.g. FID off or an older search)."""
    uri = join(experiment_uri, BACKBONE_FILE)
    try:
        record = json.loads(storage.read_text(uri)) if storage.exists(uri) else {}
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def pin_search_backbone(ctx: Any, storage: Storage, resuming: bool) -> dict[str, Any]:
    """Resolve (or, resuming, re-read) the search's backbone, check it loads here, record it.

    ``ctx`` is the driver's TrialContext. Returns the record ({} when FID is off);
    raises BackboneError when the backbone cannot be resolved or loaded, or
    (resuming) its weights are not the ones the search started with.
    """
    from ganray.metrics.backbones import pin_backbone, pinned_record, split_pin

    cfg = ctx.trial_config({}, "backbone")
    if not cfg.metrics.fid:
        return {}
    before = read_pinned(storage, ctx.experiment_uri) if resuming else {}
    metrics = cfg.metrics
    if before.get("metrics.backbone"):  # resuming: the same network and weights, or an error
        name = before["metrics.backbone"]
        if not split_pin(name)[1] and before.get("fid_backbone_weights"):
            name = f"{name}@{before['fid_backbone_weights']}"
        metrics = dataclasses.replace(metrics, backbone=name)
    record = pinned_record(*pin_backbone(metrics, cfg.data, storage))
    storage.write_text(join(ctx.experiment_uri, BACKBONE_FILE), json.dumps(record, indent=2) + "\n")
    return record
