"""ProGAN (Karras et al. 2018) generator and discriminator with fade-in, and the ``progan`` entry.

G: PixelNorm(z) -> dense to 4x4 -> 3x3 conv, then per resolution 8..R a
nearest 2x upsample and two 3x3 convs, each conv followed by PixelNorm; a 1x1
toRGB (linear) at every resolution. D mirrors it: a 1x1 fromRGB (lrelu) at
every resolution, per resolution R..8 two 3x3 convs and a 2x box
downsample, then at 4x4 minibatch stddev, a 3x3 conv, a dense layer and the
logit. Equalized lr and leaky ReLU(0.2) * sqrt(2) everywhere (ganray.models.ops).

The current stage -- resolution and fade-in alpha -- is training state, not
config: the loop sets it with ``set_stage(resolution, alpha)`` (see
ganray.train.progressive); a fresh model is at ``model.resolution``, alpha 1,
so growing off trains a plain fixed-resolution ProGAN through the same code.

Fade-in at resolution r with alpha a:
- G: ``lerp(up2(toRGB[r/2](h[r/2])), toRGB[r](block[r](h[r/2])), a)``;
- D: ``lerp(fromRGB[r/2](down2(img)), block[r](fromRGB[r](img)), a)``, then
  the blocks below r as usual (D reads r from its input's size).
Upsampling is nearest and downsampling a 2x2 box average, as the paper.
Output images are linear (no tanh), near [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganray.config import ModelConfig
from ganray.models.layers import EqualLinear, PixelNorm
from ganray.models.ops import Blur, EqualConv2d, minibatch_stddev
from ganray.models.registry import register_arch
from ganray.models.stylegan2_disc import channels_for

Tensor = torch.Tensor


def upsample(x: Tensor) -> Tensor:
    """2x nearest-neighbour upsampling (ProGAN's)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def downsample(x: Tensor) -> Tensor:
    """2x box downsampling (ProGAN's)."""
    return F.avg_pool2d(x, 2)


class _Staged(nn.Module):
    """Holds the current stage (resolution in px, alpha in [0, 1]) as plain attributes."""

    def __init__(self, resolution: int):
        super().__init__()
        self.max_resolution = resolution
        self.stage_resolution, self.alpha = resolution, 1.0

    def set_stage(self, resolution: int, alpha: float = 1.0) -> None:
        """Train/generate at ``resolution`` with fade-in ``alpha`` (1 = the new block alone)."""
        if resolution not in self.resolutions():
            raise ValueError(
                f"resolution {resolution} is not a stage of this network; stages: {self.resolutions()}"
            )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.stage_resolution, self.alpha = resolution, float(alpha)

    def resolutions(self) -> list[int]:
        return [4 * 2**i for i in range(self.max_resolution.bit_length() - 2)]

    def _in_graph(self, out: Tensor) -> Tensor:
        """``out`` + 0 * every parameter when training: blocks of other stages join the graph.

        DDP (without ``find_unused_parameters``) needs a gradient for every
        parameter; inactive stages then get exact zeros. The sum costs one pass
        over the weights, far below the convolutions' work.
        """
        if not (self.training and torch.is_grad_enabled()):
            return out
        return out + sum(p.sum() for p in self.parameters()) * 0.0


class ProGANGenerator(_Staged):
    """``z [N, latent_dim]`` -> images ``[N, C, r, r]`` at the current stage's resolution r."""

    def __init__(self, latent_dim: int, resolution: int, img_channels: int, channel_base: int, fmap_max: int):
        super().__init__(resolution)
        self.latent_dim = latent_dim
        ch = {r: channels_for(r, channel_base, fmap_max) for r in self.resolutions()}
        self.norm = PixelNorm()
        self.dense = EqualLinear(latent_dim, ch[4] * 16, activation=True)
        self.conv4 = EqualConv2d(ch[4], ch[4], 3)
        self.blocks = nn.ModuleDict(
            {
                str(r): nn.ModuleList([EqualConv2d(ch[r // 2], ch[r], 3), EqualConv2d(ch[r], ch[r], 3)])
                for r in self.resolutions()[1:]
            }
        )
        self.torgb = nn.ModuleDict(
            {str(r): EqualConv2d(ch[r], img_channels, 1, activation=False) for r in self.resolutions()}
        )

    def block(self, x: Tensor, res: int) -> Tensor:
        """The block of resolution ``res`` on features at ``res / 2``."""
        x = upsample(x)
        for conv in self.blocks[str(res)]:
            x = self.norm(conv(x))
        return x

    def features(self, z: Tensor, res: int) -> Tensor:
        """Feature maps at ``res`` (the full path, no fade)."""
        x = self.norm(self.dense(self.norm(z)).reshape(z.shape[0], -1, 4, 4))
        x = self.norm(self.conv4(x))
        for r in self.resolutions()[1:]:
            if r > res:
                break
            x = self.block(x, r)
        return x

    def forward(self, z: Tensor) -> Tensor:
        res, alpha = self.stage_resolution, self.alpha
        if res == 4 or alpha >= 1.0:
            return self._in_graph(self.torgb[str(res)](self.features(z, res)))
        prev = self.features(z, res // 2)
        new = self.torgb[str(res)](self.block(prev, res))
        return self._in_graph(torch.lerp(upsample(self.torgb[str(res // 2)](prev)), new, alpha))


class ProGANDiscriminator(_Staged):
    """Images ``[N, C, r, r]`` at any stage resolution r -> one logit per image ``[N]``."""

    def __init__(
        self,
        resolution: int,
        img_channels: int,
        channel_base: int,
        fmap_max: int,
        mbstd_group: int,
        blur: bool = False,
    ):
        super().__init__(resolution)
        ch = {r: channels_for(r, channel_base, fmap_max) for r in self.resolutions()}
        self.mbstd_group = mbstd_group
        self.fromrgb = nn.ModuleDict(
            {str(r): EqualConv2d(img_channels, ch[r], 1) for r in self.resolutions()}
        )
        self.blocks = nn.ModuleDict(
            {
                # StyleGAN's D (``blur``) low-pass filters before each block's downsampling conv.
                str(r): nn.Sequential(
                    EqualConv2d(ch[r], ch[r], 3),
                    *([Blur()] if blur else []),
                    EqualConv2d(ch[r], ch[r // 2], 3),
                )
                for r in self.resolutions()[1:]
            }
        )
        self.conv4 = EqualConv2d(ch[4] + 1, ch[4], 3)
        self.fc = EqualLinear(ch[4] * 16, ch[4], activation=True)
        self.out = EqualLinear(ch[4], 1)

    def forward(self, img: Tensor) -> Tensor:
        res = img.shape[-1]
        if res not in self.resolutions():
            raise ValueError(f"images of side {res} px: this discriminator takes {self.resolutions()}")
        x = self.fromrgb[str(res)](img)
        if res > 4:
            x = downsample(self.blocks[str(res)](x))
            if res == self.stage_resolution and self.alpha < 1.0:
                x = torch.lerp(self.fromrgb[str(res // 2)](downsample(img)), x, self.alpha)
            r = res // 2
            while r > 4:
                x = downsample(self.blocks[str(r)](x))
                r //= 2
        x = self.conv4(minibatch_stddev(x, self.mbstd_group))
        return self._in_graph(self.out(self.fc(x.flatten(1))).reshape(x.shape[0]))


@register_arch("progan")
def build_progan(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """ProGAN G and D from ``cfg`` and ``cfg.progan``, at the full resolution (alpha 1)."""
    p = cfg.progan
    base = 2 * p.network_capacity * cfg.resolution
    G = ProGANGenerator(cfg.latent_dim, cfg.resolution, cfg.channels, base, p.fmap_max)
    D = ProGANDiscriminator(cfg.resolution, cfg.channels, base, p.fmap_max, p.mbstd_group)
    return G, D
