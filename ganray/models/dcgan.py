"""DCGAN (Radford et al. 2015) and its StyleGAN-improved generator variants.

All four architectures share ``DCGANDiscriminator``; their generators add
StyleGAN ideas cumulatively:

- ``dcgan``: z -> 4x4 projection -> stride-2 transposed convs (BatchNorm+ReLU) -> tanh.
- ``dcgan-mapping``: a Z->W mapping MLP feeds the same generator.
- ``dcgan-adain``: mapping + AdaIN (style per layer from w) instead of BatchNorm.
- ``dcgan-demod``: mapping + upsample and modulated 3x3 convs with weight
  demodulation (StyleGAN2) instead of transposed conv + norm.

Sizes: a resolution R (a power of two >= 16) needs log2(R) - 2 stride-2 layers
between 4x4 and R x R (3 at 32 px, 4 at 64 px). Generator widths halve from
ngf * 2^(n-1) at 4x4 to ngf before the image layer; discriminator widths
double from ndf at R/2 to ndf * 2^(n-1) at 4x4. Images are in [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ganray.config import ModelConfig
from ganray.models.layers import (
    AdaIN,
    EqualLinear,
    MappingNetwork,
    ModulatedConv2d,
    broadcast_ws,
    scaled_leaky_relu,
)
from ganray.models.registry import register_arch


def num_blocks(resolution: int) -> int:
    """Stride-2 layers between 4x4 and ``resolution`` x ``resolution``."""
    if resolution < 16 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 16, got {resolution}")
    return int(math.log2(resolution)) - 2


def g_widths(ngf: int, n: int) -> list[int]:
    """Generator hidden widths from 4x4 to R/2: ngf * 2^(n-1), ..., ngf * 2, ngf."""
    return [ngf * 2 ** (n - 1 - i) for i in range(n)]


def dcgan_init_(m: nn.Module) -> None:
    """DCGAN init: conv/linear weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0.

    Equalized-lr layers (layers.py) are not touched: they rely on N(0, 1)
    weights with a run-time scale.
    """
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _tconv(c_in: int, c_out: int, bias: bool, project: bool = False) -> nn.ConvTranspose2d:
    """4x4 transposed conv: 1x1 -> 4x4 when ``project``, else a 2x upsampling."""
    stride, padding = (1, 0) if project else (2, 1)
    return nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=bias)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class DCGANGenerator(nn.Module):
    """DCGAN generator: ``[N, latent_dim]`` -> ``[N, channels, R, R]`` in [-1, 1].

    Also the synthesis network of ``dcgan-mapping`` (its input is then w).
    Convs followed by BatchNorm have no bias (BatchNorm's shift replaces it).
    """

    def __init__(self, latent_dim: int, ngf: int, channels: int, resolution: int, batchnorm: bool = True):
        super().__init__()
        self.latent_dim, self.num_ws = latent_dim, 1
        widths = g_widths(ngf, num_blocks(resolution))
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip([latent_dim, *widths[:-1]], widths)):
            layers.append(_tconv(c_in, c_out, bias=not batchnorm, project=i == 0))
            if batchnorm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        layers += [_tconv(widths[-1], channels, bias=True), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(dcgan_init_)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = broadcast_ws(z, 1)[:, 0]  # also accepts [N, 1, dim] styles
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


class AdaINSynthesis(nn.Module):
    """w -> image: DCGAN transposed convs, each followed by AdaIN(style_i) and ReLU.

    Style i (``w[:, i]`` for per-layer styles) drives the i-th AdaIN; the
    projection also takes style 0 as its input.
    """

    def __init__(self, w_dim: int, ngf: int, channels: int, resolution: int):
        super().__init__()
        widths = g_widths(ngf, num_blocks(resolution))
        self.w_dim, self.num_ws = w_dim, len(widths)
        # No conv bias: the instance norm right after removes any per-channel constant.
        self.convs = nn.ModuleList(
            _tconv(c_in, c_out, bias=False, project=i == 0)
            for i, (c_in, c_out) in enumerate(zip([w_dim, *widths[:-1]], widths))
        )
        self.norms = nn.ModuleList(AdaIN(c, w_dim) for c in widths)
        self.to_image = _tconv(widths[-1], channels, bias=True)
        self.apply(dcgan_init_)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        ws = broadcast_ws(w, self.num_ws)
        x = ws[:, 0].reshape(ws.shape[0], -1, 1, 1)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = F.relu(norm(conv(x), ws[:, i]))
        return torch.tanh(self.to_image(x))


class DemodSynthesis(nn.Module):
    """w -> image: projection to 4x4, then per block bilinear 2x upsampling + modulated 3x3 conv.

    Hidden convs demodulate; the image layer does not (as StyleGAN2's ToRGB),
    since its output scale is the image itself. Styles: 0 for the projection,
    1..n-1 for the hidden convs, the last for the image layer.
    """

    def __init__(self, w_dim: int, ngf: int, channels: int, resolution: int):
        super().__init__()
        widths = g_widths(ngf, num_blocks(resolution))
        self.w_dim, self.num_ws, self.base_channels = w_dim, len(widths) + 1, widths[0]
        # An equalized-lr dense projection (DCGAN's 1x1 -> 4x4 transposed conv is one too):
        # with no normalization anywhere in this G, it must start at unit scale.
        self.project = EqualLinear(w_dim, widths[0] * 16, activation=True)
        self.convs = nn.ModuleList(
            ModulatedConv2d(c_in, c_out, 3, w_dim) for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.to_image = ModulatedConv2d(widths[-1], channels, 3, w_dim, demodulate=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        ws = broadcast_ws(w, self.num_ws)
        x = self.project(ws[:, 0]).reshape(ws.shape[0], self.base_channels, 4, 4)
        for i, conv in enumerate(self.convs, start=1):
            x = scaled_leaky_relu(conv(_upsample(x), ws[:, i]))
        return torch.tanh(self.to_image(_upsample(x), ws[:, -1]))


class MappingGenerator(nn.Module):
    """A mapping network Z -> W followed by a synthesis network W -> image.

    ``mapping`` and ``synthesis`` are public so that PPL in W, truncation and
    style mixing can call them separately; ``forward(z) == synthesis(mapping(z))``.
    """

    def __init__(self, mapping: MappingNetwork, synthesis: nn.Module):
        super().__init__()
        self.mapping, self.synthesis = mapping, synthesis
        self.latent_dim, self.w_dim = mapping.z_dim, mapping.w_dim
        self.num_ws: int = synthesis.num_ws

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))


def _d_conv(c_in: int, c_out: int, stride: int, padding: int, bias: bool, sn: bool) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, 4, stride, padding, bias=bias)
    dcgan_init_(conv)  # before the parametrization, which then wraps the initialized weight
    return _spectral_norm(conv) if sn else conv


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: ``[N, channels, R, R]`` -> one logit per image, ``[N]``.

    Stride-2 4x4 convs with LeakyReLU 0.2; BatchNorm on all but the first,
    unless ``spectral_norm``, which wraps every conv and drops BatchNorm
    (the two fight: BatchNorm undoes the Lipschitz bound). A final 4x4 conv
    maps the 4x4 features to the logit. Convs followed by BatchNorm have no bias.
    """

    def __init__(self, channels: int, ndf: int, resolution: int, spectral_norm: bool = False):
        super().__init__()
        n = num_blocks(resolution)
        widths = [ndf * 2**i for i in range(n)]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip([channels, *widths[:-1]], widths)):
            batchnorm = i > 0 and not spectral_norm
            layers.append(_d_conv(c_in, c_out, 2, 1, bias=not batchnorm, sn=spectral_norm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(c_out))
                dcgan_init_(layers[-1])
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(_d_conv(widths[-1], 1, 1, 0, bias=True, sn=spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])


# ---------------------------------------------------------------- registry


def _mapping(cfg: ModelConfig) -> MappingNetwork:
    return MappingNetwork(cfg.latent_dim, cfg.w_dim or cfg.latent_dim, cfg.mapping_layers)


def _discriminator(cfg: ModelConfig) -> DCGANDiscriminator:
    return DCGANDiscriminator(cfg.channels, cfg.ndf, cfg.resolution, cfg.spectral_norm)


@register_arch("dcgan")
def build_dcgan(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Plain DCGAN."""
    G = DCGANGenerator(cfg.latent_dim, cfg.ngf, cfg.channels, cfg.resolution, cfg.batchnorm_g)
    return G, _discriminator(cfg)


@register_arch("dcgan-mapping")
def build_dcgan_mapping(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """DCGAN generator fed by a Z->W mapping network."""
    mapping = _mapping(cfg)
    synthesis = DCGANGenerator(mapping.w_dim, cfg.ngf, cfg.channels, cfg.resolution, cfg.batchnorm_g)
    return MappingGenerator(mapping, synthesis), _discriminator(cfg)


@register_arch("dcgan-adain")
def build_dcgan_adain(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Mapping network + AdaIN instead of BatchNorm (``batchnorm_g`` does not apply)."""
    mapping = _mapping(cfg)
    synthesis = AdaINSynthesis(mapping.w_dim, cfg.ngf, cfg.channels, cfg.resolution)
    return MappingGenerator(mapping, synthesis), _discriminator(cfg)


@register_arch("dcgan-demod")
def build_dcgan_demod(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Mapping network + modulated/demodulated convs (``batchnorm_g`` does not apply)."""
    mapping = _mapping(cfg)
    synthesis = DemodSynthesis(mapping.w_dim, cfg.ngf, cfg.channels, cfg.resolution)
    return MappingGenerator(mapping, synthesis), _discriminator(cfg)
