"""What every feature network is: the Backbone record, its error, input conversion.

Kept apart from the registry (backbones.py) so the networks that register
there (classifier.py, inception.py) import these without importing the
registry: the registry imports them, never the other way round.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class BackboneError(RuntimeError):
    """A backbone cannot be built: unknown name, missing or corrupt weights."""


@dataclass
class Backbone:
    """A feature network plus what a result must record about it.

    ``net(x)`` takes images in [-1, 1] and returns ``(features [N, D], logits [N, K] | None)``.
    """

    name: str  # recorded as fid_backbone in every result
    net: nn.Module
    feature_dim: int  # D
    is_inception: bool  # False -> scores are not comparable with published FIDs
    weights_tag: str  # short hash of the weights; part of reference-cache keys
    logits_dim: int = 0  # K, classes of the logits (0 = no logits, no Inception Score)
    channels_last: bool = False  # faster CPU/GPU convolutions

    def to(self, device: torch.device | str) -> Backbone:
        self.net.to(device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features and logits in one pass (float32, on the backbone's device)."""
        self.net.eval()
        x = x.to(self.device, torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.net(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[0]

    def logits(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.forward_all(x)[1]


# --------------------------------------------------------------- conversion


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition (what PIL's convert('RGB') does), RGB -> grey by ITU-R 601 luma."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
        return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)
    raise BackboneError(f"cannot convert {x.shape[1]} channels to {channels}")


def to_resolution(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear resize to ``side`` x ``side`` pixels (antialiased when shrinking)."""
    if x.shape[-2:] == (side, side):
        return x
    shrink = x.shape[-1] > side
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
