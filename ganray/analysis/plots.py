"""Plots of a search (matplotlib, Agg backend, PNG). Each function returns its figures as
``Figure`` records (file name relative to the report folder + caption), or [] when the
experiment has nothing to show for it (e.g. no progressive runs)."""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any

from ganray.analysis.table import Summary, finite


@dataclasses.dataclass
class Figure:
    path: str  # relative to the report folder
    caption: str
    data: bytes = dataclasses.field(default=b"", repr=False)  # the encoded file (PNG/GIF)


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe in worker processes
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def _series(t_history: list[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[y]) for r in t_history if finite(r.get(x)) and finite(r.get(y))]
    return [p[0] for p in pts], [p[1] for p in pts]


def metric_curves(summaries: list[Summary], metric: str, label: str = "") -> list[Figure]:
    """FID vs epoch and vs images seen, every trial, the best one highlighted."""
    label = label or metric.upper()
    plt = _plt()
    best = summaries[0] if summaries and summaries[0].best is not None else None
    out = []
    for x, xlabel, name in (
        ("epoch", "epoch", "fid_vs_epoch"),
        ("images_seen", "images seen", "fid_vs_images"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4))
        drawn = 0
        for s in summaries:
            xs, ys = _series(s.trial.history, x, metric)
            if not xs:
                continue
            drawn += 1
            is_best = best is not None and s is best
            ax.plot(
                xs,
                ys,
                marker="o",
                lw=2.5 if is_best else 1.0,
                alpha=1.0 if is_best else 0.5,
                label=f"{s.trial.trial_id} ({s.trial.status})" + (" best" if is_best else ""),
            )
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
        cap = f"{label} vs {xlabel} for every trial"
        if best:
            cap += f"; best trial {best.trial.trial_id} (bold)"
        out.append(Figure(f"plots/{name}.png", cap, _png(fig)))
    return out


def losses_and_accuracy(summaries: list[Summary], top: int = 3) -> list[Figure]:
    """G/D losses and D accuracy (train and validation) per epoch for the top trials."""
    plt = _plt()
    chosen = [s for s in summaries if s.trial.history][:top]
    if not chosen:
        return []
    panels = [
        ("d_loss", "val_d_loss", "D loss"),
        ("g_loss", "val_g_loss", "G loss"),
        ("d_acc", "val_d_acc", "D accuracy"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (train_key, val_key, title) in zip(axes, panels):
        for i, s in enumerate(chosen):
            h = [_acc_row(r) for r in s.trial.history]
            color = f"C{i}"
            for key, style, kind in ((train_key, "-", "train"), (val_key, "--", "val")):
                xs, ys = _series(h, "epoch", key)
                if xs:
                    ax.plot(xs, ys, style, color=color, marker=".", label=f"{s.trial.trial_id} {kind}")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        _clip_if_wide(ax)
    axes[0].legend(fontsize=7)
    ids = ", ".join(s.trial.trial_id for s in chosen)
    cap = f"Train (solid) and validation (dashed) D loss, G loss and D accuracy per epoch, top trials: {ids}"
    return [Figure("plots/losses_top.png", cap, _png(fig))]


def _clip_if_wide(ax) -> None:
    """A diverging trial's losses (1e20 and up) would flatten every other curve: cap the y axis
    at 10x the median magnitude and say so in the title."""
    values = [float(y) for line in ax.get_lines() for y in line.get_ydata() if finite(float(y))]
    if not values:
        return
    ys = sorted(abs(v) for v in values)
    cap = 10 * max(1.0, ys[len(ys) // 2])
    if ys[-1] > 100 * cap:
        ax.set_ylim(max(-cap, min(values)) - 0.05 * cap, cap)
        ax.set_title(f"{ax.get_title()} (clipped at +-{cap:.3g})")


def _acc_row(r: dict[str, Any]) -> dict[str, Any]:
    """A metrics row plus d_acc / val_d_acc: the mean of D's accuracy on real and on fake images."""
    out = dict(r)
    for prefix in ("", "val_"):
        a, b = r.get(f"{prefix}d_acc_real"), r.get(f"{prefix}d_acc_fake")
        if finite(a) and finite(b):
            out[f"{prefix}d_acc"] = (a + b) / 2
    return out


def lr_vs_best(summaries: list[Summary], metric: str, label: str = "") -> list[Figure]:
    """Each evaluated trial's G learning rate against its best FID (log x)."""
    label = label or metric.upper()
    pts = [(s.trial.cfg("optim.lr"), s.best, s.trial.trial_id) for s in summaries if s.best is not None]
    pts = [p for p in pts if finite(p[0]) and p[0] > 0]
    if not pts:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    for lr, v, tid in pts:
        ax.annotate(tid, (lr, v), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("optim.lr (G)")
    ax.set_ylabel(f"best {label}")
    ax.grid(alpha=0.3)
    return [Figure("plots/lr_vs_best.png", f"G learning rate vs best {label}, one point per evaluated trial", _png(fig))]  # fmt: skip


def lr_schedule(best: Summary | None) -> list[Figure]:
    """The best trial's G and D learning rates per epoch."""
    if best is None:
        return []
    xs, g = _series(best.trial.history, "epoch", "lr_g")
    _, d = _series(best.trial.history, "epoch", "lr_d")
    if not xs:
        return []
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, g, marker="o", label="lr_g")
    if len(d) == len(xs):
        ax.plot(xs, d, marker="s", label="lr_d")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.legend()
    ax.grid(alpha=0.3)
    sched = best.trial.cfg("schedule.name", "none")
    return [Figure("plots/lr_schedule.png", f"Learning rates per epoch of the best trial {best.trial.trial_id} (schedule: {sched})", _png(fig))]  # fmt: skip


def progressive_losses(summaries: list[Summary]) -> list[Figure]:
    """G/D loss per resolution for progressive runs (rows carrying a 'resolution' that changes)."""
    plt = _plt()
    out = []
    for s in summaries:
        res = {r.get("resolution") for r in s.trial.history if finite(r.get("resolution"))}
        if len(res) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i, rr in enumerate(sorted(res)):
            h = [r for r in s.trial.history if r.get("resolution") == rr]
            for key, style in (("d_loss", "-"), ("g_loss", "--")):
                xs, ys = _series(h, "epoch", key)
                ax.plot(xs, ys, style, color=f"C{i}", marker=".", label=f"{key} @ {int(rr)} px")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        out.append(Figure(f"plots/progressive_{s.trial.trial_id}.png", f"G/D loss per resolution, trial {s.trial.trial_id}", _png(fig)))  # fmt: skip
        if len(out) >= 3:
            break
    return out


def importance_plot(imp: dict[str, float], method: str) -> list[Figure]:
    if not imp:
        return []
    plt = _plt()
    keys = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(keys)))
    ax.barh(keys, [imp[k] for k in keys])
    ax.set_xlabel("importance")
    return [Figure("plots/importance.png", f"Hyperparameter importance ({method})", _png(fig))]


def parallel_coordinates(summaries: list[Summary], metric: str, label: str = "") -> list[Figure]:
    """Searched params (each scaled to [0, 1]; log scale for positive ranges over a decade) and best FID."""
    scored = [s for s in summaries if s.best is not None and s.trial.params]
    keys = sorted({k for s in scored for k in s.trial.params})
    if len(scored) < 2 or not keys:
        return []
    axes_vals = {k: _scale([s.trial.params.get(k) for s in scored]) for k in keys}
    axes_vals[metric] = _scale([s.best for s in scored])
    names = [*keys, metric]
    plt = _plt()
    cmap = plt.get_cmap("viridis_r")
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    best_v = [s.best for s in scored]
    lo, hi = min(best_v), max(best_v)
    for i, s in enumerate(scored):
        ys = [axes_vals[n][i] for n in names]
        c = cmap(0.0 if hi == lo else (s.best - lo) / (hi - lo))
        ax.plot(range(len(names)), ys, color=c, alpha=0.8, marker="o", label=s.trial.trial_id)
    ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.legend(fontsize=7)
    return [Figure("plots/parallel_coordinates.png", f"Searched values of every evaluated trial (each axis scaled to its range), coloured by best {label or metric.upper()}", _png(fig))]  # fmt: skip


def _scale(values: list[Any]) -> list[float]:
    nums = [v for v in values if finite(v)]
    if len(nums) == len(values) and nums:
        lo, hi = min(nums), max(nums)
        if lo > 0 and hi / lo > 10:
            values, lo, hi = [math.log10(v) for v in values], math.log10(lo), math.log10(hi)
        return [0.5 if hi == lo else (v - lo) / (hi - lo) for v in values]
    cats = sorted({str(v) for v in values})
    return [0.5 if len(cats) == 1 else cats.index(str(v)) / (len(cats) - 1) for v in values]


def all_plots(
    summaries: list[Summary], metric: str, imp: dict[str, float], method: str, label: str = ""
) -> list[Figure]:
    """Every plot, in the report's order."""
    best = summaries[0] if summaries and summaries[0].best is not None else None
    return [
        *metric_curves(summaries, metric, label),
        *losses_and_accuracy(summaries),
        *lr_vs_best(summaries, metric, label),
        *lr_schedule(best),
        *progressive_losses(summaries),
        *importance_plot(imp, method),
        *parallel_coordinates(summaries, metric, label),
    ]
