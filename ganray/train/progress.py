"""What a run logs while it trains: a progress line every ~10 s and a summary per epoch."""

from __future__ import annotations

import math
from typing import Any


def progress_line(epoch: int, epochs: int, step: int, n_steps: int, img_s: float, elapsed_s: float) -> str:
    """``epoch 2/3 step 120/256  52 img/s  ETA 0:04:10``; the ETA assumes every epoch has
    ``n_steps`` steps (a growing model's batch table changes that: a rough figure)."""
    done = (epoch - 1) * n_steps + step
    todo = (epochs - epoch) * n_steps + (n_steps - step)
    eta = elapsed_s / max(done, 1) * todo if done else float("nan")
    return f"epoch {epoch}/{epochs} step {step}/{n_steps}  {img_s:.0f} img/s  ETA {fmt_seconds(eta)}"


def epoch_summary(row: dict[str, Any], epochs: int) -> str:
    """One log line per finished epoch: losses, the metric (with its backbone), the stage
    of a growing model, and speed, e.g. ``epoch 2/3 done: d_loss 0.71, g_loss 2.10,
    FID [fashion-mnist-classifier] 45.20 (2000 samples), 16 px alpha 0.40, 52 img/s, 0:03:10``."""
    parts = [f"d_loss {row['d_loss']:.3f}", f"g_loss {row['g_loss']:.3f}"]
    if row.get("eval_error"):
        parts.append(f"evaluation failed ({row['eval_error']})")
    if row.get("fid") is not None:
        parts.append(f"{row.get('fid_label', 'FID')} {row['fid']:.2f} ({row.get('fid_num_samples')} samples)")
    if row.get("resolution") is not None:
        alpha = row.get("alpha", 1.0)
        parts.append(f"{int(row['resolution'])} px" + (f" alpha {alpha:.2f}" if alpha < 1 else ""))
    parts.append(f"{row.get('images_per_s', float('nan')):.0f} img/s")
    parts.append(fmt_seconds(row.get("epoch_seconds", float("nan"))))
    return f"epoch {row['epoch']}/{epochs} done: " + ", ".join(parts)


def fmt_seconds(s: float) -> str:
    """``H:MM:SS`` (``?`` when unknown)."""
    if not math.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
