"""Config evolution: configs, run names and checkpoints written by older releases keep working.

Three rules, so that adding a config field never breaks anything already stored:

1. A field missing from a stored config (YAML, a run's config.yaml, a
   checkpoint's config) takes its current default. ``from_dict`` does this by
   construction; ``fill_defaults`` does it for plain dicts.
2. A retired field (listed in ``RETIRED``) is dropped when a config is read, so
   old files that still hold it load; a non-default value is warned about,
   because the setting no longer does anything.
3. A run's name hashes ``identity(config)``: every field of the 0.1 release (the
   ``BASELINE`` below, whose run names hashed every field, so those runs keep
   their names), plus any later field only where it differs from its default.
   Adding a field at its default therefore never renames a run. Never change
   the default of a field that is not in the baseline (that would rename runs
   that used the old default); add a new field instead.

This module works on plain dicts and does not import ganray.config (which
imports it).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("ganray.config")

# Retired field -> (the value every run effectively had, why it was retired).
RETIRED: dict[str, tuple[Any, str]] = {
    "data.loader_workers": (
        0,
        "training batches are indexed straight from the in-memory image tensor, "
        "so there are no DataLoader worker processes to configure",
    ),
}

# Fields of release 0.1 per section (storage never names a run). Their values
# are always hashed, as 0.1 did, so the names of existing runs do not change.
BASELINE: dict[str, tuple[str, ...]] = {
    "model": (
        "arch",
        "resolution",
        "channels",
        "latent_dim",
        "ngf",
        "ndf",
        "w_dim",
        "mapping_layers",
        "spectral_norm",
        "batchnorm_g",
    ),
    "data": ("source", "uri", "resolution", "channels", "subset", "val_fraction", "cache_dir"),
    "optim": ("name", "lr", "d_lr_ratio", "beta1", "beta2", "momentum", "weight_decay", "grad_clip"),
    "schedule": ("name", "step_size", "gamma", "min_lr_ratio"),
    "train": (
        "loss",
        "gp_weight",
        "drift",
        "epochs",
        "batch_size",
        "d_steps",
        "ema_decay",
        "seed",
        "grid_size",
        "keep_checkpoints",
        "max_steps_per_epoch",
        "amp",
        "channels_last",
        "workers",
        "use_gpu",
        "cpus_per_worker",
        "max_failures",
    ),
    "metrics": (
        "fid",
        "backbone",
        "inception_weights",
        "num_samples",
        "eval_every",
        "batch_size",
        "kid",
        "pr",
        "inception_score",
        "ppl",
    ),
}

_SAME = object()  # marker: a value equal to its default


def is_retired(key: str, value: Any) -> bool:
    """True if dotted ``key`` is retired (warns when ``value`` is not the value it always had)."""
    if key not in RETIRED:
        return False
    old, why = RETIRED[key]
    if value != old:
        log.warning("%s=%r is ignored: the setting was removed (%s)", key, value, why)
    return True


def fill_defaults(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every key it lacks taken from ``defaults`` (recursively)."""
    out = dict(defaults)
    for k, v in data.items():
        d = defaults.get(k)
        out[k] = fill_defaults(v, d) if isinstance(v, dict) and isinstance(d, dict) else v
    return out


def _differing(value: Any, default: Any) -> Any:
    """The parts of ``value`` that differ from ``default`` (``_SAME`` if none)."""
    if isinstance(value, dict) and isinstance(default, dict):
        out = {}
        for k, v in value.items():
            d = _differing(v, default.get(k, _SAME))
            if d is not _SAME:
                out[k] = d
        return out or _SAME
    return _SAME if value == default else value


def identity(config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The part of a config dict that names its run (see rule 3 in the module docstring)."""
    out: dict[str, Any] = {}
    for section, values in config.items():
        if section == "storage":
            continue
        base = BASELINE.get(section, ())
        default = defaults.get(section, {})
        if not isinstance(values, dict):
            diff = _differing(values, default)
            if diff is not _SAME:
                out[section] = diff
            continue
        kept = {k: v for k, v in values.items() if k in base}
        newer = _differing({k: v for k, v in values.items() if k not in base}, default)
        if newer is not _SAME:
            kept.update(newer)
        # Retired baseline fields are hashed at the value every run had.
        for key, (old, _) in RETIRED.items():
            sec, _, name = key.partition(".")
            if sec == section and name not in kept:
                kept[name] = old
        if kept:
            out[section] = kept
    return out
