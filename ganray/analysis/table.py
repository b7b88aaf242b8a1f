"""The results table: one row per trial and epoch, and a summary row per trial.

``trials.parquet`` columns: trial_id, status, error, arch, ``param.<key>``
(every searched value), epoch, images_seen, wall_seconds (cumulative training
time of the run, s), every metric of that epoch as stored (fid, kid, d/g
losses, D accuracies, val_* losses and accuracies, lr_g, lr_d, resolution and
alpha where a family reports them), and fid_backbone (the FID feature network).
A trial with no finished epoch yet still gets one row (epoch null).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ganray.analysis.experiment import Experiment, Trial

LEAD = ["trial_id", "status", "error", "arch", "epoch", "images_seen", "wall_seconds"]


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def rows(exp: Experiment) -> list[dict[str, Any]]:
    """Every (trial, epoch) row, trials in id order."""
    out = []
    for t in sorted(exp.trials, key=lambda t: t.trial_id):
        base = {
            "trial_id": t.trial_id,
            "status": t.status,
            "error": t.error or None,
            "arch": t.cfg("model.arch"),
            "fid_backbone": t.cfg("metrics.backbone"),
            **{f"param.{k}": v for k, v in t.params.items()},
        }
        if not t.history:
            out.append(dict(base))
        wall = 0.0
        for r in t.history:
            wall += float(r.get("epoch_seconds") or 0.0)
            out.append({**base, **r, "wall_seconds": wall})
    return out


def to_arrow(exp: Experiment):
    """The table as a pyarrow Table (columns: LEAD first, then params, then metrics, sorted)."""
    import pyarrow as pa

    rs = rows(exp)
    keys = {k for r in rs for k in r}
    lead = [k for k in LEAD if k in keys]
    rest = sorted(keys - set(lead), key=lambda k: (not k.startswith("param."), k))
    cols = lead + rest
    data = {c: [_clean(r.get(c)) for r in rs] for c in cols}
    return pa.table({c: _column(v) for c, v in data.items()})


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _column(values: list[Any]):
    """One Arrow column; mixed types (a searched choice of numbers and strings) become strings."""
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values])


@dataclasses.dataclass
class Summary:
    """One trial's headline numbers."""

    trial: Trial
    best: float | None  # best objective (FID) over its evaluated epochs
    best_epoch: int | None
    epochs: int
    avg_val_d_acc: float | None  # mean over epochs of (val_d_acc_real + val_d_acc_fake) / 2
    best_val_g_loss: float | None  # lowest validation G loss over epochs


def summarize(exp: Experiment) -> list[Summary]:
    """A Summary per trial, best first (never-evaluated trials last, by id)."""
    out = []
    for t in exp.trials:
        best, best_epoch = None, None
        for r in t.history:
            v = r.get(exp.metric)
            if finite(v) and (best is None or (v < best if exp.mode == "min" else v > best)):
                best, best_epoch = float(v), int(r["epoch"])
        accs = [
            (r["val_d_acc_real"] + r["val_d_acc_fake"]) / 2
            for r in t.history
            if finite(r.get("val_d_acc_real")) and finite(r.get("val_d_acc_fake"))
        ]
        g = [float(r["val_g_loss"]) for r in t.history if finite(r.get("val_g_loss"))]
        out.append(
            Summary(
                t,
                best,
                best_epoch,
                len(t.history),
                sum(accs) / len(accs) if accs else None,
                min(g) if g else None,
            )
        )
    sign = 1 if exp.mode == "min" else -1
    return sorted(out, key=lambda s: (s.best is None, sign * (s.best or 0.0), s.trial.trial_id))


def best(exp: Experiment) -> Summary | None:
    """The best trial by the objective over all its evaluated epochs (None if none evaluated)."""
    s = summarize(exp)
    return s[0] if s and s[0].best is not None else None


def metric_label(exp: Experiment) -> str:
    """How the objective is named in its rows (``fid_label``: "FID [fashion-mnist-classifier]" when the
    features are not Inception's, so the scale is never mistaken), else its upper-cased name."""
    for t in exp.trials:
        for r in t.history:
            if isinstance(r.get(f"{exp.metric}_label"), str):
                return r[f"{exp.metric}_label"]
    return exp.metric.upper()
