"""DiffAugment (Zhao et al. 2020) and ADA's adaptive probability (Karras et al. 2020).

Differentiable augmentations applied to every image D sees, real and fake,
in every D and G loss, so D cannot overfit the few real images without G
learning the augmentations. Policies: ``color`` (brightness, saturation,
contrast), ``translation`` (up to 1/8 of the side, zero fill), ``cutout``
(a zeroed square of half the side); comma-separated, e.g. ``color,translation``.

Each op runs on an image with probability ``p`` (``p = 0`` is the identity),
from a uniform tensor ``u`` [N, NUM_RANDOMS] the caller draws, so a batch
split over DDP workers is augmented exactly as on one worker.
Pixels are in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganray.config import ConfigError

Tensor = torch.Tensor
POLICIES = ("color", "translation", "cutout")
NUM_RANDOMS = 12  # columns of u: 6 for color, 3 for translation, 3 for cutout
TRANSLATION_RATIO = 1 / 8
CUTOUT_RATIO = 1 / 2


def parse_policy(policy: str) -> tuple[str, ...]:
    """``'color,translation'`` -> ('color', 'translation'), or a ConfigError naming the bad op."""
    ops = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in ops if p not in POLICIES]
    if bad:
        raise ConfigError(
            f"train.augment.policy: unknown op {bad[0]!r}; use a comma-separated subset of "
            f"{', '.join(POLICIES)}, or '' for none"
        )
    return ops


def _where(apply: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(apply.view(-1, 1, 1, 1), a, b)


def color(x: Tensor, u: Tensor, p: float) -> Tensor:
    """Brightness +[-0.5, 0.5), saturation x[0, 2), contrast x[0.5, 1.5), each with probability p."""
    b = u[:, 0].view(-1, 1, 1, 1) - 0.5
    x = _where(u[:, 1] < p, x + b, x)
    mean_c = x.mean(dim=1, keepdim=True)
    x = _where(u[:, 3] < p, (x - mean_c) * (u[:, 2].view(-1, 1, 1, 1) * 2) + mean_c, x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return _where(u[:, 5] < p, (x - mean) * (u[:, 4].view(-1, 1, 1, 1) + 0.5) + mean, x)


def translation(x: Tensor, u: Tensor, p: float, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """Shift each image by whole pixels in [-ratio*side, ratio*side], filling with zeros."""
    n, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    apply = (u[:, 8] < p).long()
    ty = ((u[:, 6] * (2 * sy + 1)).long() - sy) * apply  # integer shifts, 0 when not applied
    tx = ((u[:, 7] * (2 * sx + 1)).long() - sx) * apply
    xp = F.pad(x, [sx, sx, sy, sy])
    iy = torch.arange(h, device=x.device).view(1, h) + sy - ty.view(n, 1)  # [N, H]
    ix = torch.arange(w, device=x.device).view(1, w) + sx - tx.view(n, 1)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return xp[batch, chan, iy.view(n, 1, h, 1), ix.view(n, 1, 1, w)]


def cutout(x: Tensor, u: Tensor, p: float, ratio: float = CUTOUT_RATIO) -> Tensor:
    """Zero a square of side ``ratio * side`` at a random position (may overlap the border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (u[:, 9] * (h + 1 - ch % 2)).long().view(n, 1, 1)  # square centre
    cx = (u[:, 10] * (w + 1 - cw % 2)).long().view(n, 1, 1)
    gy = torch.arange(h, device=x.device).view(1, h, 1)
    gx = torch.arange(w, device=x.device).view(1, 1, w)
    y0, x0 = cy - ch // 2, cx - cw // 2
    inside = (gy >= y0) & (gy < y0 + ch) & (gx >= x0) & (gx < x0 + cw)
    mask = 1.0 - (inside & (u[:, 11] < p).view(n, 1, 1)).to(x.dtype)
    return x * mask.unsqueeze(1)


OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: Tensor, policy: tuple[str, ...], p: float, u: Tensor) -> Tensor:
    """Apply the ops of ``policy`` in order, each per image with probability ``p``."""
    if not policy or p <= 0:
        return x
    u = u.to(device=x.device, dtype=torch.float32)
    for name in policy:
        x = OPS[name](x, u, p)
    return x


def ada_adjust(p: float, rt: float, target: float, images: int, ada_kimg: float) -> float:
    """ADA: move ``p`` by ``images / (ada_kimg * 1000)`` towards keeping r_t = E[sign D(real)] at ``target``.

    r_t above the target means D is over-confident on reals (overfitting):
    augment more. ``p`` can go from 0 to 1 in ``ada_kimg`` thousand images.
    """
    step = images / (ada_kimg * 1000.0)
    sign = 1.0 if rt > target else (-1.0 if rt < target else 0.0)
    return min(max(p + sign * step, 0.0), 1.0)
