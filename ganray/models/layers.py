"""Building blocks shared by the generator families.

The DCGAN variants use them now; the StyleGAN/StyleGAN2 families (ROADMAP)
will reuse the same equalized-lr layers, mapping network, AdaIN and modulated
convolution. Everything here is a plain ``nn.Module`` or function.

Conventions: ``w`` is a style batch ``[N, w_dim]``; per-layer styles (for
style mixing) are ``[N, num_ws, w_dim]`` and are expanded by ``broadcast_ws``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
# A (leaky) ReLU roughly halves the second moment of a zero-mean input; the
# sqrt(2) gain restores it, so activations keep their scale with depth in
# networks that have no normalization layer (as in StyleGAN's fused lrelu).
LRELU_GAIN = math.sqrt(2.0)


def scaled_leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2) times sqrt(2): variance-preserving activation."""
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def broadcast_ws(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """Styles as ``[N, num_ws, w_dim]``: a single ``[N, w_dim]`` is used by every layer."""
    if w.dim() == 2:
        return w.unsqueeze(1).expand(-1, num_ws, -1)
    if w.dim() != 3 or w.shape[1] != num_ws:
        raise ValueError(f"expected w of shape [N, w_dim] or [N, {num_ws}, w_dim], got {list(w.shape)}")
    return w


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (Karras et al. 2018).

    The weight is stored as N(0, 1) / lr_mul and scaled at run time by
    lr_mul / sqrt(in_features). Adam's update size is then the same for every
    layer whatever its fan-in, and ``lr_mul`` < 1 makes the layer learn slower
    (StyleGAN's mapping network uses 0.01). ``bias_init`` is the effective
    initial bias.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_mul)) if bias else None
        self.scale = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        out = F.linear(x, self.weight * self.scale, bias)
        return scaled_leaky_relu(out) if self.activation else out

    def extra_repr(self) -> str:
        out_f, in_f = self.weight.shape
        return f"{in_f}, {out_f}, lr_mul={self.lr_mul}, activation={self.activation}"


class PixelNorm(nn.Module):
    """Normalize each feature vector to unit RMS over dim 1 (channels / latent units)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class MappingNetwork(nn.Module):
    """StyleGAN's Z -> W MLP: PixelNorm(z), then ``num_layers`` equalized-lr linears + LeakyReLU 0.2.

    The low ``lr_mul`` (0.01) keeps W from drifting fast early in training,
    which the StyleGAN paper found important for stability.
    """

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_mul: float = 0.01) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"mapping network needs at least one layer, got {num_layers}")
        self.z_dim, self.w_dim, self.num_layers = z_dim, w_dim, num_layers
        dims = [z_dim] + [w_dim] * num_layers
        layers: list[nn.Module] = [PixelNorm()]
        layers += [EqualLinear(a, b, lr_mul=lr_mul, activation=True) for a, b in zip(dims[:-1], dims[1:])]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class AdaIN(nn.Module):
    """Adaptive instance norm: normalize each channel per image, then scale and shift by a style.

    The per-channel scale and bias come from an equalized-lr affine map of
    ``w``; the scale starts at 1 and the bias at 0, so at initialization the
    layer is a plain instance norm.
    """

    def __init__(self, channels: int, w_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.style = EqualLinear(w_dim, 2 * channels)
        with torch.no_grad():
            self.style.bias[:channels].fill_(1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, shift = self.style(w).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return scale * F.instance_norm(x, eps=self.eps) + shift


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution with optional weight demodulation.

    Each image gets its own filters: the shared weight is scaled per input
    channel by a style from ``w`` (modulation). With ``demodulate`` every
    output filter is then divided by its L2 norm, so inputs with unit variance
    give outputs with unit variance whatever the style: this replaces AdaIN's
    data-dependent normalization (the source of StyleGAN's droplet artifacts)
    by a purely weight-based one. All images run in one grouped convolution.
    Spatial size is kept (stride 1, "same" padding); upsampling is done by the
    caller.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        w_dim: int,
        demodulate: bool = True,
        bias: bool = True,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.eps = demodulate, eps
        # Equalized lr: stored N(0, 1), scaled by 1/sqrt(fan_in) at run time.
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        # Styles start at 1 so the layer starts as an ordinary convolution.
        self.modulation = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Per-image filters ``[N, out, in, k, k]`` for styles ``w``."""
        style = self.modulation(w).view(w.shape[0], 1, self.in_channels, 1, 1)
        weight = self.scale * self.weight * style
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + self.eps)
        return weight

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, c, h, wd = x.shape
        k = self.kernel_size
        weight = self.modulated_weight(w).reshape(n * self.out_channels, c, k, k)
        # Fold the batch into channels: group i convolves image i with its own filters.
        out = F.conv2d(x.reshape(1, n * c, h, wd), weight, padding=k // 2, groups=n)
        out = out.reshape(n, self.out_channels, h, wd)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"demodulate={self.demodulate}"
        )
