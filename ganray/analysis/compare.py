"""Comparisons the studies made by hand: best FID per hyperparameter value, per-run summaries.

Each comparison is a small ``Comparison`` (title, header, rows) written as a
CSV and rendered as a Markdown table (and as HTML by the report). Values come
from each trial's stored config, so plain and searched values both count.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Callable
from typing import Any

from ganray.analysis.table import Summary, finite

# (slug, title, what to group by: a trial's summary -> its group label or None)
Grouper = Callable[[Summary], Any]


@dataclasses.dataclass
class Comparison:
    slug: str  # file name stem
    title: str
    header: list[str]
    rows: list[list[Any]]
    note: str = ""

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.header)
        w.writerows([["" if v is None else v for v in r] for r in self.rows])
        return buf.getvalue()

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.3f}".rstrip("0").rstrip(".")
    return str(v).replace("|", "\\|").replace("\n", " ")


def lr_bins(values: list[float], max_bins: int = 5) -> Callable[[float], str]:
    """Label a learning rate with its log-spaced bin (exact values when there are few)."""
    uniq = sorted(set(values))
    if len(uniq) <= max_bins:
        return lambda v: f"{v:.3g}"
    lo, hi = math.log10(uniq[0]), math.log10(uniq[-1])
    edges = [10 ** (lo + (hi - lo) * i / max_bins) for i in range(max_bins + 1)]

    def label(v: float) -> str:
        i = min(max_bins - 1, max(0, sum(v >= e for e in edges[1:-1])))
        return f"[{edges[i]:.2g}, {edges[i + 1]:.2g}{']' if i == max_bins - 1 else ')'}"

    return label


def group_best(summaries: list[Summary], key: Grouper, mode: str) -> list[list[Any]]:
    """Rows (value, trials, evaluated, best FID, best trial), best group first."""
    groups: dict[str, list[Summary]] = {}
    for s in summaries:
        k = key(s)
        if k is not None:
            groups.setdefault(str(k), []).append(s)
    out = []
    for k, members in groups.items():
        scored = [m for m in members if m.best is not None]
        pick = (min if mode == "min" else max)(scored, key=lambda m: m.best) if scored else None
        out.append(
            [k, len(members), len(scored), pick.best if pick else None, pick.trial.trial_id if pick else None]
        )
    sign = 1 if mode == "min" else -1
    return sorted(out, key=lambda r: (r[3] is None, sign * (r[3] or 0.0), r[0]))


def comparisons(summaries: list[Summary], metric: str, mode: str) -> list[Comparison]:
    """Best metric per lr bin, optimizer, scheduler, capacity and family; the per-run table."""
    lrs = [float(s.trial.cfg("optim.lr")) for s in summaries if finite(s.trial.cfg("optim.lr"))]
    lr_label = lr_bins(lrs)

    def capacity(s: Summary) -> str | None:
        g, d = s.trial.cfg("model.ngf"), s.trial.cfg("model.ndf")
        return None if g is None and d is None else f"ngf={g} ndf={d}"

    groupers: list[tuple[str, str, Grouper]] = [
        ("by_lr", "learning rate (G)", lambda s: lr_label(float(s.trial.cfg("optim.lr"))) if finite(s.trial.cfg("optim.lr")) else None),
        ("by_optimizer", "optimizer", lambda s: s.trial.cfg("optim.name")),
        ("by_scheduler", "scheduler", lambda s: s.trial.cfg("schedule.name")),
        ("by_capacity", "capacity", capacity),
        ("by_family", "model family", lambda s: s.trial.cfg("model.arch")),
    ]  # fmt: skip
    out = []
    for slug, what, key in groupers:
        out.append(
            Comparison(
                slug,
                f"Best {metric} per {what}",
                [what, "trials", "evaluated", f"best {metric}", "best trial"],
                group_best(summaries, key, mode),
            )
        )
    out.append(
        Comparison(
            "per_run",
            "Per run",
            ["trial", "status", f"best {metric}", "at epoch", "epochs", "avg val D acc", "best val G loss", "error"],
            [
                [s.trial.trial_id, s.trial.status, s.best, s.best_epoch, s.epochs, s.avg_val_d_acc, s.best_val_g_loss, s.trial.error or None]
                for s in summaries
            ],
            "avg val D acc: mean over epochs of D's accuracy on held-out real and fixed-noise fake images; "
            "best val G loss: the lowest held-out G loss over epochs.",
        )
    )  # fmt: skip
    return out


def config_table(config: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    """A nested config as (dotted key, value) rows."""
    rows: list[list[Any]] = []
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += config_table(v, key + ".")
        else:
            rows.append([key, v])
    return rows
