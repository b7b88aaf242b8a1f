"""pytorch-fid's FID InceptionV3 (pool3, 2048-d) with weights from a URI.

The network is the TF-ported Inception that every published FID uses
(pt_inception-2015-12-05-6726825d.pth); its blocks come from pytorch-fid, so the
architecture is identical by construction. Unlike pytorch-fid, the weights are
read through ganray's Storage (local path, s3://, memory://) and nothing is
downloaded unless no URI is configured and the torch hub cache lacks the file.
"""

from __future__ import annotations

import io
import os

import torch
import torch.nn.functional as F
from torch import nn

from ganray.config import MetricsConfig
from ganray.metrics.backbone_types import Backbone, BackboneError, sha256_hex, to_channels
from ganray.storage import Storage

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
# pytorch-fid's FID_WEIGHTS_URL (a test checks they agree). pytorch-fid and
# torchvision are imported only to build the network: importing them costs ~1.5 s,
# and this module is imported in every trial's workers to register the backbone.
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE
INPUT_SIDE = 299  # pixels; pytorch-fid resizes every input to this


def hub_cache_path() -> str:
    """Where pytorch-fid's own download puts the weights (torch hub cache)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", WEIGHTS_FILE)


def inception_weights_available(cfg: MetricsConfig) -> bool:
    """True when weights are configured (they must then exist) or already in the hub cache."""
    return bool(cfg.inception_weights) or os.path.exists(hub_cache_path())


def fid_inception_skeleton() -> nn.Module:
    """torchvision Inception3 patched into the FID variant, randomly initialised, no download."""
    import torchvision
    from pytorch_fid import inception as pfi

    net = torchvision.models.inception_v3(
        num_classes=1008, aux_logits=False, weights=None, init_weights=False
    )
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


# The layers pytorch-fid's InceptionV3 runs up to pool3, in order (max-pools are functional).
_LAYERS = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "maxpool",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "maxpool",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)


class FIDInception(nn.Module):
    """Images in [-1, 1] -> (pool3 features [N, 2048], logits [N, 1008])."""

    def __init__(self) -> None:
        super().__init__()
        self.inception = fid_inception_skeleton()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_channels(x, 3)
        # Same order of operations as pytorch-fid (resize in [0, 1], then rescale) so
        # features match it to float rounding.
        x = (x + 1) / 2
        x = F.interpolate(x, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for name in _LAYERS:
            x = (
                F.max_pool2d(x, kernel_size=3, stride=2)
                if name == "maxpool"
                else getattr(self.inception, name)(x)
            )
        feats = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return feats, self.inception.fc(feats)


def _read_weights(cfg: MetricsConfig, storage: Storage) -> bytes:
    uri = cfg.inception_weights or (hub_cache_path() if os.path.exists(hub_cache_path()) else "")
    if not uri:
        try:  # pytorch-fid's own download (needs internet)
            torch.hub.load_state_dict_from_url(WEIGHTS_URL, progress=False, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any network failure gets the same advice
            raise BackboneError(
                f"Inception weights {WEIGHTS_FILE} are not configured (metrics.inception_weights='') "
                f"and could not be downloaded from {WEIGHTS_URL} ({type(e).__name__}: {e}). Copy the file "
                f"somewhere reachable and set metrics.inception_weights to its path or s3:// URI, or use "
                f"an offline backbone (metrics.backbone=auto or fashion-mnist-classifier)."
            ) from e
        uri = hub_cache_path()
    if not storage.exists(uri):
        raise BackboneError(
            f"Inception weights {WEIGHTS_FILE} not found at {uri!r} (setting metrics.inception_weights). "
            f"Download it from {WEIGHTS_URL} and point metrics.inception_weights at it, or clear "
            f"metrics.inception_weights and use an offline backbone (metrics.backbone=auto or "
            f"fashion-mnist-classifier)."
        )
    return storage.read_bytes(uri)


def load_inception_net(cfg: MetricsConfig, storage: Storage) -> tuple[FIDInception, str]:
    """The FID Inception with the configured weights, and the weights' sha256."""
    data = _read_weights(cfg, storage)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    net = FIDInception()
    try:
        net.inception.load_state_dict(state)
    except RuntimeError as e:
        raise BackboneError(
            f"metrics.inception_weights={cfg.inception_weights!r} is not a {WEIGHTS_FILE} state dict: {e}"
        ) from e
    net.requires_grad_(False).eval()
    return net, sha256_hex(data)


def build_inception(cfg: MetricsConfig, storage: Storage) -> Backbone:
    net, sha = load_inception_net(cfg, storage)
    return Backbone(
        name="inception",
        net=net,
        feature_dim=2048,
        is_inception=True,
        weights_tag=sha[:12],
        logits_dim=1008,
        channels_last=True,
    )
