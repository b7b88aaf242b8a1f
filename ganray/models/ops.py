"""StyleGAN2 operators in pure PyTorch: FIR resampling, equalized-lr convs, modulated conv.

Semantics follow NVlabs' stylegan2-ada-pytorch reference implementations
(``upfirdn2d_ref``, ``conv2d_resample``, ``modulated_conv2d``), written anew:

- ``upfirdn2d``: upsample by zero insertion, pad (negative = crop), convolve
  with the FIR filter (a true convolution: the filter is flipped), keep every
  ``down``-th pixel. Filters are normalized to sum 1; ``gain`` multiplies the
  output (``up**2`` for upsampling keeps the mean).
- Equalized learning rate: weights are stored N(0, 1) and scaled at run time
  by ``1/sqrt(fan_in)`` so Adam's step size is the same for every layer.
- ``modulated_conv2d`` has two paths that compute the same function:
  ``fused`` (per-image filters in one grouped conv) and the
  scale-conv-scale path (scale the input by the style, run one shared conv,
  scale the output by the demodulation coefficients). See
  ``benchmarks/stylegan2.py`` for which one is faster where.

Pixels are in [-1, 1]; shapes are NCHW.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganray.models.layers import LRELU_GAIN, LRELU_SLOPE

Tensor = torch.Tensor
BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)  # StyleGAN2's resampling filter (binomial, separable)


def setup_filter(taps: tuple[float, ...] = BLUR_KERNEL) -> Tensor:
    """A 1-D FIR filter normalized to sum 1 (applied separably along H and W)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    return f / f.sum()


def _fir_1d(x: Tensor, f: Tensor, dim: int, stride: int) -> Tensor:
    """Depthwise true convolution of NCHW ``x`` with 1-D ``f`` along H (dim 2) or W (dim 3)."""
    c = x.shape[1]
    k = f.flip(0).to(x.dtype)  # flip: true convolution, as NVlabs' flip_filter=False
    weight = k.view(1, 1, -1, 1) if dim == 2 else k.view(1, 1, 1, -1)
    stride_hw = (stride, 1) if dim == 2 else (1, stride)
    return F.conv2d(x, weight.expand(c, 1, *weight.shape[2:]), stride=stride_hw, groups=c)


def upfirdn2d(
    x: Tensor,
    f: Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> Tensor:
    """Upsample, pad, FIR-filter, downsample (NVlabs ``upfirdn2d`` reference semantics).

    ``f`` is a 1-D filter used separably along H and W (so the 2-D filter is
    its outer product); ``padding`` is (x0, x1, y0, y1) in pixels of the
    upsampled image, negative values crop. Output side:
    ``(H * up + y0 + y1 - len(f)) // down + 1``.
    """
    n, c, h, w = x.shape
    if up > 1:  # zero insertion: each pixel followed by up-1 zeros along H and W
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    # The stride of the filtering conv does the downsampling (same as slicing ::down).
    x = _fir_1d(x, f, 2, down)
    x = _fir_1d(x, f, 3, down)
    return x * gain if gain != 1.0 else x


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """2x FIR upsampling; output ``[N, C, 2H, 2W]`` (NVlabs ``upsample2d`` padding)."""
    return upfirdn2d(x, f, up=2, padding=_up_pad(f.numel()) * 2, gain=4.0)


def _up_pad(k: int, up: int = 2) -> tuple[int, int]:
    """Padding (before, after) that makes ``up``x FIR upsampling with a ``k``-tap filter keep alignment."""
    return (k + up - 1) // 2, (k - up) // 2


def downsample2d(x: Tensor, f: Tensor) -> Tensor:
    """2x FIR downsampling; output ``[N, C, H/2, W/2]`` (NVlabs ``downsample2d`` padding)."""
    k = f.numel()
    p0, p1 = (k - 2 + 1) // 2, (k - 2) // 2
    return upfirdn2d(x, f, down=2, padding=(p0, p1, p0, p1))


def bias_act(
    x: Tensor, bias: Tensor | None, act: bool, gain: float = 1.0, clamp: float | None = None
) -> Tensor:
    """Add a per-channel bias, then leaky ReLU(0.2) * sqrt(2) (if ``act``), times ``gain``, clamped."""
    if bias is not None:
        x = x + bias.view(1, -1, 1, 1).to(x.dtype)
    if act:
        x = F.leaky_relu(x, LRELU_SLOPE)
        gain = gain * LRELU_GAIN
    if gain != 1.0:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def conv2d_resample(x: Tensor, w: Tensor, f: Tensor, up: int = 1, down: int = 1, groups: int = 1) -> Tensor:
    """A 'same' conv with weight ``w`` [O, I/groups, k, k], optionally 2x up or down with FIR.

    Up: stride-2 transposed conv then the FIR filter (4x fewer multiply-adds
    than upsampling first). Down: FIR filter then stride-2 conv; a 1x1 kernel
    filters with stride 2 first. Padding follows NVlabs' ``conv2d_resample``.
    """
    k, fk = w.shape[-1], f.numel()
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=k // 2, groups=groups)
    if down > 1:
        if k == 1:
            p = (fk - down + 1) // 2, (fk - down) // 2
            return F.conv2d(upfirdn2d(x, f, down=down, padding=p * 2), w, groups=groups)
        p = k // 2 + (fk - down + 1) // 2, k // 2 + (fk - down) // 2
        return F.conv2d(upfirdn2d(x, f, padding=p * 2), w, stride=down, groups=groups)
    p0, p1 = _up_pad(fk, up)
    if k == 1:
        return F.conv2d(upfirdn2d(x, f, up=up, padding=(p0, p1) * 2, gain=up * up), w, groups=groups)
    # Transposed conv wants [I, O/groups, k, k]; regroup the per-group filters.
    o, i_g = w.shape[0], w.shape[1]
    wt = w.reshape(groups, o // groups, i_g, k, k).transpose(1, 2).reshape(groups * i_g, o // groups, k, k)
    x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
    p0, p1 = p0 + k // 2 - (k - 1), p1 + k // 2 - (k - up)
    return upfirdn2d(x, f, padding=(p0, p1, p0, p1), gain=up * up)


class Blur(nn.Module):
    """StyleGAN's low-pass filter (default [1, 2, 1], separable, sum 1) keeping the image size.

    StyleGAN applies it after each upsampling conv of G and before each
    downsampling conv of D, against the aliasing of nearest/box resampling.
    """

    def __init__(self, taps: tuple[float, ...] = (1.0, 2.0, 1.0)):
        super().__init__()
        self.register_buffer("f", setup_filter(taps), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        p = (self.f.numel() - 1) // 2
        return upfirdn2d(x, self.f, padding=(p, p, p, p))


class EqualConv2d(nn.Module):
    """Equalized-lr conv (+ bias and lrelu) with optional FIR up/down (NVlabs ``Conv2dLayer``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: bool = True,
        up: int = 1,
        down: int = 1,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)  # equalized lr, run time
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, self.up, self.down)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain, clamp)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, up={self.up}, down={self.down}, activation={self.activation}"


def modulated_conv2d(
    x: Tensor,
    weight: Tensor,
    styles: Tensor,
    f: Tensor,
    demodulate: bool = True,
    up: int = 1,
    fused: bool = True,
    eps: float = 1e-8,
) -> Tensor:
    """StyleGAN2 modulated conv of ``x`` [N, I, H, W] by ``weight`` [O, I, k, k] and ``styles`` [N, I].

    Each image's filter is ``weight * style`` over input channels; with
    ``demodulate`` every output filter is rescaled to unit L2 norm, so a
    unit-variance input gives a unit-variance output whatever the style.
    ``fused`` runs one grouped conv with per-image filters; otherwise the
    input is scaled by the style, a shared conv runs, and the output is scaled
    by the demodulation coefficients (equal results, different speed).
    """
    n = x.shape[0]
    o, i, k, _ = weight.shape
    if demodulate and x.dtype == torch.float16:
        # fp16 tops out at 65504: scale each filter to max |w| = 1/sqrt(fan_in) and each image's
        # styles to max |s| = 1 (NVlabs). Demodulation divides both scales out again.
        weight = weight / (
            weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8) * math.sqrt(i * k * k)
        )
        styles = styles / styles.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
    dcoefs = None
    if demodulate:
        # ||W_o * s||^2 = sum_i s_i^2 * sum_kk W_oi^2: an [N, I] x [I, O] matmul instead of
        # squaring the [N, O, I, k, k] per-image weights (the same numbers, far fewer flops).
        dcoefs = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + eps).rsqrt()  # [N, O]
    if not fused:
        x = x * styles.reshape(n, i, 1, 1).to(x.dtype)
        x = conv2d_resample(x, weight.to(x.dtype), f, up=up)
        return x * dcoefs.reshape(n, o, 1, 1).to(x.dtype) if dcoefs is not None else x
    w = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)  # [N, O, I, k, k]
    if dcoefs is not None:
        w = w * dcoefs.reshape(n, o, 1, 1, 1)
    x = x.reshape(1, n * i, *x.shape[2:])
    x = conv2d_resample(x, w.reshape(n * o, i, k, k).to(x.dtype), f, up=up, groups=n)
    return x.reshape(n, o, *x.shape[2:])


def minibatch_stddev(x: Tensor, group_size: int, num_channels: int = 1) -> Tensor:
    """Append ``num_channels`` feature maps holding the std over groups of images (ProGAN/StyleGAN2).

    Groups are *consecutive* images (NVlabs strides them); with consecutive
    groups a batch split across DDP workers in contiguous slices, each a
    multiple of ``group_size``, gives the same statistics as one worker.
    The group is ``min(group_size, N)``, shrunk to a divisor of N for a ragged
    batch (e.g. the last validation batch): gcd(group, N).
    """
    n, c, h, w = x.shape
    g = math.gcd(min(group_size, n), n)
    y = x.reshape(n // g, g, num_channels, c // num_channels, h, w).float()
    y = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)  # variance over the group
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # [n/g, F]: average std per channel group
    y = y.reshape(n // g, 1, num_channels, 1, 1).expand(-1, g, -1, h, w).reshape(n, num_channels, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)
