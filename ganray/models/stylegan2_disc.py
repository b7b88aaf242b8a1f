"""StyleGAN2 discriminator (NVlabs ``resnet`` default, ``skip``, ``orig``) and self-attention.

Per resolution from R down to 8: (fromRGB) -> 3x3 conv -> 3x3 conv with 2x
FIR downsampling; ``resnet`` adds a 1x1 downsampling shortcut and sums the
two branches times 1/sqrt(2); ``skip`` feeds a downsampled copy of the image
through a fromRGB at every resolution. The 4x4 epilogue appends minibatch
standard deviation, then 3x3 conv, dense, and the logit. Equalized lr
everywhere; widths as the generator's (``channels_for``). Mixed precision as
the generator's: blocks at the ``num_fp16_res`` highest resolutions may
compute in fp16 (``precision.py``), the epilogue is always fp32; fromRGB and
the 3x3 convs clamp their outputs to +-conv_clamp (the 1x1 shortcut does not).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganray.models.layers import EqualLinear
from ganray.models.ops import EqualConv2d, downsample2d, minibatch_stddev, setup_filter
from ganray.models.precision import block_dtype, fp16_resolution

Tensor = torch.Tensor
G_ARCHS = ("skip", "resnet", "orig")
D_ARCHS = ("resnet", "skip", "orig")
SQRT_HALF = math.sqrt(0.5)


def channels_for(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at resolution ``res``: ``min(channel_base // res, channel_max)`` (NVlabs)."""
    return max(1, min(channel_base // res, channel_max))


class SelfAttention(nn.Module):
    """SAGAN self-attention over pixels, added as a residual whose weight ``gamma`` starts at 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.key_dim = max(channels // 8, 1)
        self.qk = EqualConv2d(channels, 2 * self.key_dim, 1, bias=False, activation=False)
        self.value = EqualConv2d(channels, channels, 1, bias=False, activation=False)
        self.gamma = nn.Parameter(torch.zeros([]))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k = self.qk(x).flatten(2).chunk(2, dim=1)  # [N, d, HW] each
        # Softmax in fp32 whatever the block's dtype (fp16 logits overflow exp).
        attn = torch.softmax((q.transpose(1, 2) @ k).float() / math.sqrt(self.key_dim), dim=-1).to(x.dtype)
        out = self.value(x).flatten(2) @ attn.transpose(1, 2)  # [N, C, HW]
        return x + self.gamma * out.reshape(n, c, h, w)


class DiscriminatorBlock(nn.Module):
    """Resolution ``res`` -> ``res / 2``; ``c_in == 0`` marks the first block (image input)."""

    def __init__(
        self,
        c_in: int,
        c_tmp: int,
        c_out: int,
        img_channels: int,
        arch: str,
        use_fp16: bool = False,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.arch = arch
        self.use_fp16, self.low_dtype = use_fp16, None  # see precision.py
        rgb = c_in == 0 or arch == "skip"
        self.fromrgb = EqualConv2d(img_channels, c_tmp, 1, conv_clamp=conv_clamp) if rgb else None
        self.conv0 = EqualConv2d(c_tmp, c_tmp, 3, conv_clamp=conv_clamp)
        self.conv1 = EqualConv2d(c_tmp, c_out, 3, down=2, conv_clamp=conv_clamp)
        self.skip = (
            EqualConv2d(c_tmp, c_out, 1, bias=False, activation=False, down=2) if arch == "resnet" else None
        )
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: Tensor | None, img: Tensor | None) -> tuple[Tensor, Tensor | None]:
        dtype = block_dtype(self)
        x = x.to(dtype) if x is not None else None
        if self.fromrgb is not None:
            img = img.to(dtype)
            y = self.fromrgb(img)
            x = y if x is None else x + y
            img = downsample2d(img, self.resample_filter) if self.arch == "skip" else None
        if self.skip is not None:
            y = self.skip(x, gain=SQRT_HALF)
            x = y + self.conv1(self.conv0(x), gain=SQRT_HALF)
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class DiscriminatorEpilogue(nn.Module):
    """4x4 features (+ image for ``skip``) -> minibatch stddev -> conv -> dense -> logit ``[N]``."""

    def __init__(
        self,
        channels: int,
        img_channels: int,
        arch: str,
        mbstd_group: int,
        mbstd_channels: int,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.fromrgb = EqualConv2d(img_channels, channels, 1) if arch == "skip" else None
        self.mbstd_group, self.mbstd_channels = mbstd_group, mbstd_channels
        self.conv = EqualConv2d(channels + mbstd_channels, channels, 3, conv_clamp=conv_clamp)
        self.fc = EqualLinear(channels * 16, channels, activation=True)
        self.out = EqualLinear(channels, 1)

    def forward(self, x: Tensor, img: Tensor | None) -> Tensor:
        x = x.float()  # the epilogue is fp32 whatever the blocks computed in
        if self.fromrgb is not None:
            x = x + self.fromrgb(img.float())
        if self.mbstd_channels > 0:
            x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1))).reshape(x.shape[0])


class StyleGAN2Discriminator(nn.Module):
    """``[N, C, R, R]`` images in [-1, 1] -> one logit per image ``[N]``."""

    def __init__(
        self,
        resolution: int,
        img_channels: int,
        channel_base: int,
        channel_max: int,
        arch: str = "resnet",
        mbstd_group: int = 4,
        mbstd_channels: int = 1,
        attn_layers: tuple[int, ...] = (),
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        low_res = fp16_resolution(resolution, num_fp16_res)
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        res = resolution
        while res > 4:
            c_tmp = channels_for(res, channel_base, channel_max)
            if res in attn_layers and res != resolution:
                self.attn[str(res)] = SelfAttention(c_tmp)
            c_in = 0 if res == resolution else c_tmp
            c_out = channels_for(res // 2, channel_base, channel_max)
            self.blocks.append(
                DiscriminatorBlock(c_in, c_tmp, c_out, img_channels, arch, res >= low_res, conv_clamp)
            )
            res //= 2
        self.resolutions = [resolution // 2**i for i in range(len(self.blocks))]
        self.epilogue = DiscriminatorEpilogue(
            channels_for(4, channel_base, channel_max),
            img_channels,
            arch,
            mbstd_group,
            mbstd_channels,
            conv_clamp,
        )

    def forward(self, img: Tensor) -> Tensor:
        x = None
        for res, block in zip(self.resolutions, self.blocks):
            if str(res) in self.attn:  # attention on the features entering this resolution's convs
                x = self.attn[str(res)](x)
            x, img = block(x, img)
        return self.epilogue(x, img)
