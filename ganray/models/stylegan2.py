"""StyleGAN2 (Karras et al. 2020) generator and the ``stylegan2`` registry entry.

Semantics follow NVlabs' stylegan2-ada-pytorch (``networks.py``), written
anew on the operators in ``ops.py``:

- mapping: PixelNorm(z), ``mapping_layers`` equalized-lr linears (lr
  multiplier 0.01), a tracked average ``w_avg`` (beta 0.995) for truncation;
- synthesis: a learned 4x4 constant, per resolution two modulated 3x3 convs
  (the first upsamples through the [1,3,3,1] FIR filter) with
  demodulation, per-layer noise with a learned strength (starts at 0), bias
  and leaky ReLU * sqrt(2); architectures ``skip`` (a toRGB per resolution,
  upsampled and summed), ``resnet`` and ``orig``;
- mixed precision (``num_fp16_res``, ``conv_clamp``): the highest
  resolutions compute in fp16 when the trainer asks for it (CUDA; see
  ``precision.py``), every conv output is clamped to +-conv_clamp (times the
  layer's gain), the toRGB outputs are summed into an fp32 image.

Widths follow lucidrains' knobs: ``channels(res) = min(channel_base // res,
fmap_max)`` with ``channel_base = 2 * network_capacity * resolution``, which
is NVlabs' ``channel_base`` / ``channel_max`` (NVlabs' 32768 / 512 at 256 px
is ``network_capacity=64, fmap_max=512``). Styles: ``num_ws = 2 *
log2(resolution) - 2`` (8 at 32 px, 14 at 256 px); the toRGB of a block
shares its style with the next block's first conv, as in NVlabs.

Output images are not squashed (no tanh, as NVlabs): they are near [-1, 1]
and clamped where they become pixels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganray.config import ConfigError, ModelConfig
from ganray.models.layers import EqualLinear, MappingNetwork, broadcast_ws
from ganray.models.ops import EqualConv2d, bias_act, modulated_conv2d, setup_filter, upsample2d
from ganray.models.precision import block_dtype, fp16_resolution
from ganray.models.registry import register_arch
from ganray.models.stylegan2_disc import SelfAttention, StyleGAN2Discriminator, channels_for

Tensor = torch.Tensor
NOISE_MODES = ("random", "const", "none")
SQRT_HALF = math.sqrt(0.5)  # resnet branches are summed with this gain to keep unit variance


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + noise + bias + lrelu: one style, one noise input."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        w_dim: int,
        res: int,
        up: int = 1,
        fused: str = "auto",
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)  # styles start at 1
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.noise_strength = nn.Parameter(torch.zeros([]))  # noise starts switched off
        self.register_buffer("noise_const", torch.randn(res, res))
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.res, self.up, self.fused, self.conv_clamp = res, up, fused, conv_clamp

    def forward(
        self, x: Tensor, w: Tensor, noise_mode: str = "random", noise: Tensor | None = None, gain: float = 1.0
    ) -> Tensor:
        fused = choose_fused(self.fused, x)
        x = modulated_conv2d(x, self.weight, self.affine(w), self.resample_filter, up=self.up, fused=fused)
        if noise is None and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.res, self.res, device=x.device, dtype=x.dtype)
        elif noise is None and noise_mode == "const":
            noise = self.noise_const
        if noise is not None:
            x = x + (noise * self.noise_strength).to(x.dtype)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=True, gain=gain, clamp=clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels, no demodulation (its output scale is the image)."""

    def __init__(self, c_in: int, img_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, c_in, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(c_in)
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(), persistent=False)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, self.resample_filter, demodulate=False, fused=False)
        return bias_act(x, self.bias, act=False, clamp=self.conv_clamp)


def choose_fused(mode: str, x: Tensor) -> bool:
    """Which modulated-conv path runs: 'fused', 'unfused', or 'auto'.

    'auto' on CPU: always scale-conv-scale. benchmarks/results/stylegan2.json
    (``modconv_rule_whole_G_32px``: the quickstart G with every layer forced
    to one path, the paths alternating, medians of 9 rounds, 3 runs at load
    average 9-10 on 2 cores, 1 and 2 threads): unfused takes 0.13-0.45x the
    fused time at batch 32 and 0.19-0.51x at batch 8 in training and in
    inference (one batch-8 inference run tied, 1.28x with 5 of 9 rounds won),
    and 0.39-0.93x in training at batch 1. Only batch-1 inference is unsettled
    (fused 2.2x faster in one run, a tie in one, 0.55x in the 2-thread run),
    and there both take milliseconds, so the rule keeps one path on CPU.
    On GPU NVlabs' rule (not measured here, no GPU): grouped conv for fp32
    inference, scale-conv-scale in training (the shared weight gets one
    dense gradient) and in reduced-precision blocks (styles are pre-scaled).
    """
    if mode != "auto":
        return mode == "fused"
    return x.device.type != "cpu" and not torch.is_grad_enabled() and x.dtype == torch.float32


class SynthesisBlock(nn.Module):
    """One resolution: (const | conv0 up) -> conv1 -> toRGB, in the chosen architecture."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        w_dim: int,
        res: int,
        img_channels: int,
        arch: str,
        is_last: bool,
        fused: str,
        use_fp16: bool = False,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.arch, self.res = arch, res
        self.use_fp16, self.low_dtype = use_fp16, None  # see precision.py
        if c_in == 0:
            self.const = nn.Parameter(torch.randn(c_out, 4, 4))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(c_in, c_out, w_dim, res, up=2, fused=fused, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(c_out, c_out, w_dim, res, fused=fused, conv_clamp=conv_clamp)
        self.torgb = ToRGB(c_out, img_channels, w_dim, conv_clamp) if (arch == "skip" or is_last) else None
        self.skip = (
            EqualConv2d(c_in, c_out, 1, bias=False, activation=False, up=2)
            if arch == "resnet" and c_in
            else None
        )
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.num_conv = 1 if c_in == 0 else 2
        self.num_torgb = 1 if self.torgb is not None else 0

    def forward(self, x, img, ws: Tensor, noise_mode: str, noise: list[Tensor | None]):
        """``ws`` [N, num_conv + 1, w_dim]: the convs' styles then the toRGB's.

        ``x`` leaves in this block's dtype; ``img`` stays fp32.
        """
        dtype = block_dtype(self)
        if self.conv0 is None:
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode, noise[0])
        elif self.skip is not None:
            x = x.to(dtype)
            y = self.skip(x, gain=SQRT_HALF)
            x = self.conv0(x, ws[:, 0], noise_mode, noise[0])
            x = y + self.conv1(x, ws[:, 1], noise_mode, noise[1], gain=SQRT_HALF)
        else:
            x = self.conv0(x.to(dtype), ws[:, 0], noise_mode, noise[0])
            x = self.conv1(x, ws[:, 1], noise_mode, noise[1])
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.torgb is not None:
            y = self.torgb(x, ws[:, self.num_conv]).float()
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """``ws`` [N, num_ws, w_dim] (or [N, w_dim]) -> images [N, C, R, R]."""

    def __init__(
        self,
        w_dim: int,
        resolution: int,
        img_channels: int,
        channel_base: int,
        channel_max: int,
        arch: str = "skip",
        attn_layers: tuple[int, ...] = (),
        fused: str = "auto",
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.w_dim, self.resolution = w_dim, resolution
        low_res = fp16_resolution(resolution, num_fp16_res)
        resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        for res in resolutions:
            c_in = channels_for(res // 2, channel_base, channel_max) if res > 4 else 0
            c_out = channels_for(res, channel_base, channel_max)
            block = SynthesisBlock(
                c_in,
                c_out,
                w_dim,
                res,
                img_channels,
                arch,
                res == resolution,
                fused,
                res >= low_res,
                conv_clamp,
            )
            self.blocks.append(block)
            if res in attn_layers:
                self.attn[str(res)] = SelfAttention(c_out)
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    @property
    def noise_shapes(self) -> list[int]:
        """Side (pixels) of each noise input, in the order ``forward(noise=...)`` takes them."""
        return [layer.res for b in self.blocks for layer in (b.conv0, b.conv1) if layer is not None]

    def forward(self, ws: Tensor, noise_mode: str = "random", noise: list[Tensor] | None = None) -> Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode {noise_mode!r}: choose one of {', '.join(NOISE_MODES)}")
        ws = broadcast_ws(ws, self.num_ws)
        noise = list(noise) if noise is not None else [None] * len(self.noise_shapes)
        x = img = None
        w_idx = n_idx = 0
        for block in self.blocks:
            k = block.num_conv
            x, img = block(x, img, ws[:, w_idx : w_idx + k + 1], noise_mode, noise[n_idx : n_idx + k])
            if str(block.res) in self.attn:
                x = self.attn[str(block.res)](x)
            w_idx, n_idx = w_idx + k, n_idx + k
        return img


class StyleGAN2Generator(nn.Module):
    """Mapping + synthesis with truncation and style mixing; ``forward(z) -> images``.

    The training step calls the (possibly DDP-wrapped) module with keyword
    arguments so style mixing and path length run mapping and synthesis
    under gradient in one forward: ``mix_z`` + ``crossover`` (layers
    ``>= crossover`` take ``mix_z``'s styles), ``noise`` (one tensor per
    ``noise_shapes`` entry, drawn by the caller for reproducibility) and
    ``return_ws`` (also return the styles that the images depend on).
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        mapping_layers: int,
        synthesis: SynthesisNetwork,
        lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
    ):
        super().__init__()
        self.mapping_net = MappingNetwork(z_dim, w_dim, mapping_layers, lr_mul=lr_mul)
        self.synthesis = synthesis
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.latent_dim, self.w_dim, self.num_ws = z_dim, w_dim, synthesis.num_ws
        self.w_avg_beta = w_avg_beta

    @property
    def noise_shapes(self) -> list[int]:
        return self.synthesis.noise_shapes

    def mapping(self, z: Tensor, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        """Styles ``[N, num_ws, w_dim]``; truncated towards ``w_avg`` by ``psi`` in layers < ``cutoff``.

        In training mode the batch mean of w moves ``w_avg`` (beta 0.995 per call).
        """
        w = self.mapping_net(z)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1.0:
            cut = self.num_ws if cutoff is None else cutoff
            ws[:, :cut] = self.w_avg.to(ws.dtype).lerp(ws[:, :cut], psi)
        return ws

    def forward(
        self,
        z: Tensor,
        mix_z: Tensor | None = None,
        crossover: int | None = None,
        psi: float = 1.0,
        cutoff: int | None = None,
        noise_mode: str = "random",
        noise: list[Tensor] | None = None,
        return_ws: bool = False,
    ):
        ws = self.mapping(z, psi, cutoff)
        if mix_z is not None and crossover is not None and crossover < self.num_ws:
            ws2 = self.mapping(mix_z, psi, cutoff)
            ws = torch.cat([ws[:, :crossover], ws2[:, crossover:]], dim=1)
        img = self.synthesis(ws, noise_mode, noise)
        return (img, ws) if return_ws else img


# ---------------------------------------------------------------- registry


def check_attn_layers(layers: str, resolution: int) -> tuple[int, ...]:
    """``model.stylegan2.attn_layers`` ('16,32') as a tuple of resolutions, or a ConfigError."""
    parts = [p.strip() for p in str(layers).split(",") if p.strip()]
    res = [int(p) if p.isdigit() else -1 for p in parts]
    bad = [p for p, r in zip(parts, res) if r < 4 or r > resolution or r & (r - 1)]
    if bad:
        raise ConfigError(
            f"model.stylegan2.attn_layers: {', '.join(bad)} not a resolution of this model; "
            f"use powers of two between 4 and {resolution}, comma-separated, e.g. '16,32'"
        )
    return tuple(res)


@register_arch("stylegan2")
def build_stylegan2(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """StyleGAN2 G (mapping + synthesis) and D from ``cfg`` and ``cfg.stylegan2``."""
    s = cfg.stylegan2
    base = 2 * s.network_capacity * cfg.resolution
    attn = check_attn_layers(s.attn_layers, cfg.resolution)
    w_dim = s.w_dim or cfg.latent_dim
    clamp = s.conv_clamp or None  # 0 = off
    synthesis = SynthesisNetwork(
        w_dim,
        cfg.resolution,
        cfg.channels,
        base,
        s.fmap_max,
        s.g_arch,
        attn,
        s.modconv,
        s.num_fp16_res,
        clamp,
    )
    G = StyleGAN2Generator(cfg.latent_dim, w_dim, s.mapping_layers, synthesis, s.mapping_lr_mul, s.w_avg_beta)
    D = StyleGAN2Discriminator(
        cfg.resolution,
        cfg.channels,
        base,
        s.fmap_max,
        s.d_arch,
        s.mbstd_group,
        s.mbstd_channels,
        attn,
        s.num_fp16_res,
        clamp,
    )
    return G, D
