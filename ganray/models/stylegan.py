"""StyleGAN (Karras et al. 2019) generator with progressive growing, and the ``stylegan`` entry.

Semantics follow NVlabs' ``networks_stylegan.py`` (``G_style``,
``G_synthesis``, ``D_basic``), written anew on ganray's layers:

- mapping: PixelNorm(z), ``mapping_layers`` equalized-lr linears with lr
  multiplier 0.01 and leaky ReLU, a tracked ``w_avg`` (beta 0.995), truncation
  and style mixing -- the StyleGAN2 generator's wrapper, reused as is;
- synthesis: a learned 4x4 constant (initialised to 1), then per resolution
  r = 8..R: nearest 2x upsampling, a 3x3 conv, the [1, 2, 1] blur, an
  epilogue, a 3x3 conv, an epilogue. Each epilogue (NVlabs ``layer_epilogue``)
  adds per-pixel noise times a learned per-channel strength (starts at 0),
  a bias, leaky ReLU(0.2), then AdaIN: instance norm and a per-channel
  scale/bias from an equalized-lr affine map of that layer's style. Two
  styles and two noise inputs per resolution: ``num_ws = 2 * log2(R) - 2``;
- a linear 1x1 toRGB per resolution; the discriminator is ProGAN's (fromRGB
  per resolution, minibatch stddev at 4x4) with the blur before each
  downsampling conv, as ``D_basic``.

Convolutions carry NVlabs' He gain sqrt(2) in their run-time weight scale
(``EqualConv2d(..., gain=sqrt 2)``), so the noise enters at NVlabs' relative
scale. NVlabs fuses up/downsampling into the conv at >= 128 px; here it is
always nearest/box resampling plus conv (the same function up to the fused
kernel's boundary handling).

Progressive growing is ProGAN's (ganray.models.progan, ganray.train.progressive):
``set_stage(resolution, alpha)`` selects the blocks in use; during a fade G
blends ``up2(toRGB[r/2](h[r/2]))`` with ``toRGB[r](block[r](h[r/2]))`` by
alpha. A fresh model is at ``model.resolution``, alpha 1 (growing off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganray.config import ConfigError, ModelConfig
from ganray.models.layers import LRELU_GAIN, LRELU_SLOPE, AdaIN, broadcast_ws
from ganray.models.ops import Blur, EqualConv2d
from ganray.models.progan import ProGANDiscriminator, _Staged, upsample
from ganray.models.registry import register_arch
from ganray.models.stylegan2 import NOISE_MODES, StyleGAN2Generator
from ganray.models.stylegan2_disc import channels_for

Tensor = torch.Tensor


class StyleEpilogue(nn.Module):
    """After each conv: + noise * strength (per channel), + bias, leaky ReLU, AdaIN with one style."""

    def __init__(self, channels: int, w_dim: int, res: int):
        super().__init__()
        self.noise_strength = nn.Parameter(torch.zeros(channels))  # noise starts switched off
        self.bias = nn.Parameter(torch.zeros(channels))
        self.adain = AdaIN(channels, w_dim, eps=1e-8)  # NVlabs' instance-norm epsilon
        self.register_buffer("noise_const", torch.randn(res, res))  # noise_mode 'const'
        self.res = res

    def forward(
        self, x: Tensor, w: Tensor, noise_mode: str = "random", noise: Tensor | None = None
    ) -> Tensor:
        if noise is None and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.res, self.res, device=x.device, dtype=x.dtype)
        elif noise is None and noise_mode == "const":
            noise = self.noise_const
        if noise is not None:
            x = x + noise * self.noise_strength.view(1, -1, 1, 1).to(x.dtype)
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1).to(x.dtype), LRELU_SLOPE)
        return self.adain(x, w)


class StyleBlock(nn.Module):
    """One resolution: (const | up2, 3x3 conv, blur) -> epilogue -> 3x3 conv -> epilogue; two styles."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, res: int):
        super().__init__()
        self.res = res
        if c_in == 0:  # the 4x4 block starts from the learned constant
            self.const = nn.Parameter(torch.ones(c_out, 4, 4))
            self.conv0 = self.blur = None
        else:
            self.conv0 = EqualConv2d(c_in, c_out, 3, bias=False, activation=False)
            self.blur = Blur()
        self.epilogue0 = StyleEpilogue(c_out, w_dim, res)
        self.conv1 = EqualConv2d(c_out, c_out, 3, bias=False, activation=False)
        self.epilogue1 = StyleEpilogue(c_out, w_dim, res)

    def forward(self, x: Tensor | None, ws: Tensor, noise_mode: str, noise: list[Tensor | None]) -> Tensor:
        """``ws`` [N, 2, w_dim]: the styles of the two epilogues; ``x`` None for the 4x4 block."""
        if self.conv0 is None:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.blur(self.conv0(upsample(x), gain=LRELU_GAIN))
        x = self.epilogue0(x, ws[:, 0], noise_mode, noise[0])
        return self.epilogue1(self.conv1(x, gain=LRELU_GAIN), ws[:, 1], noise_mode, noise[1])


class StyleSynthesis(_Staged):
    """``ws`` [N, num_ws, w_dim] (or [N, w_dim]) -> images [N, C, r, r] at the current stage's r."""

    def __init__(self, w_dim: int, resolution: int, img_channels: int, channel_base: int, fmap_max: int):
        super().__init__(resolution)
        self.w_dim, self.resolution = w_dim, resolution
        ch = {r: channels_for(r, channel_base, fmap_max) for r in self.resolutions()}
        self.blocks = nn.ModuleList(
            [StyleBlock(ch[r // 2] if r > 4 else 0, ch[r], w_dim, r) for r in self.resolutions()]
        )
        self.torgb = nn.ModuleDict(
            {str(r): EqualConv2d(ch[r], img_channels, 1, activation=False) for r in self.resolutions()}
        )
        self.num_ws = 2 * len(self.blocks)

    @property
    def noise_shapes(self) -> list[int]:
        """Side (px) of each noise input, in style order: two per resolution (all stages)."""
        return [r for r in self.resolutions() for _ in range(2)]

    def features(
        self, ws: Tensor, res: int, noise_mode: str = "random", noise: list | None = None
    ) -> list[Tensor]:
        """Output features of every block up to ``res`` (the full path, no fade), lowest first."""
        ws = broadcast_ws(ws, self.num_ws)
        noise = list(noise) if noise is not None else [None] * self.num_ws
        if len(noise) != self.num_ws:
            raise ValueError(f"noise: expected {self.num_ws} tensors (noise_shapes), got {len(noise)}")
        out: list[Tensor] = []
        for i, r in enumerate(self.resolutions()):
            if r > res:
                break
            x = out[-1] if out else None
            out.append(self.blocks[i](x, ws[:, 2 * i : 2 * i + 2], noise_mode, noise[2 * i : 2 * i + 2]))
        return out

    def forward(self, ws: Tensor, noise_mode: str = "random", noise: list[Tensor] | None = None) -> Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode {noise_mode!r}: choose one of {', '.join(NOISE_MODES)}")
        res, alpha = self.stage_resolution, self.alpha
        feats = self.features(ws, res, noise_mode, noise)
        img = self.torgb[str(res)](feats[-1])
        if res > 4 and alpha < 1.0:  # fade-in: the previous stage's image, upsampled
            img = torch.lerp(upsample(self.torgb[str(res // 2)](feats[-2])), img, alpha)
        return self._in_graph(img)


class StyleGANGenerator(StyleGAN2Generator):
    """Mapping + staged synthesis; ``forward(z, mix_z=, crossover=, psi=, cutoff=, noise=...)``.

    The keyword interface is StyleGAN2's (ganray.models.registry). The stage
    lives in the synthesis network; ``active_ws`` (styles in use at the stage)
    bounds the style-mixing crossover, as NVlabs' ``cur_layers``. The
    ``truncation_psi`` / ``truncation_cutoff`` attributes are the generation
    defaults (``model.stylegan``); ``forward`` does not truncate unless asked.
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        mapping_layers: int,
        synthesis: StyleSynthesis,
        lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
        truncation_psi: float = 0.7,
        truncation_cutoff: int = 8,
    ):
        super().__init__(z_dim, w_dim, mapping_layers, synthesis, lr_mul, w_avg_beta)
        self.truncation_psi, self.truncation_cutoff = truncation_psi, truncation_cutoff

    def set_stage(self, resolution: int, alpha: float = 1.0) -> None:
        """Generate at ``resolution`` with fade-in ``alpha`` (see ProGAN's ``set_stage``)."""
        self.synthesis.set_stage(resolution, alpha)

    def resolutions(self) -> list[int]:
        return self.synthesis.resolutions()

    @property
    def stage_resolution(self) -> int:
        return self.synthesis.stage_resolution

    @property
    def alpha(self) -> float:
        return self.synthesis.alpha

    @property
    def active_ws(self) -> int:
        """Styles used at the current stage: two per resolution up to it."""
        return 2 * (self.synthesis.stage_resolution.bit_length() - 2)


# ---------------------------------------------------------------- registry


def num_ws_for(resolution: int) -> int:
    """Styles of a StyleGAN at ``resolution`` px: two per resolution from 4 px."""
    return 2 * (resolution.bit_length() - 2)


def check_stylegan(cfg: ModelConfig) -> None:
    """Rules of ``model.stylegan`` that depend on ``model.resolution``; ConfigError naming the fix."""
    n = num_ws_for(cfg.resolution)
    if cfg.stylegan.truncation_cutoff > n:
        raise ConfigError(
            f"model.stylegan.truncation_cutoff ({cfg.stylegan.truncation_cutoff}) is above the "
            f"{n} styles of a {cfg.resolution} px StyleGAN; set it to at most {n}"
        )


@register_arch("stylegan")
def build_stylegan(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """StyleGAN G (mapping + staged synthesis) and D (ProGAN's with blur) from ``cfg.stylegan``."""
    check_stylegan(cfg)
    s = cfg.stylegan
    base = 2 * s.network_capacity * cfg.resolution
    w_dim = s.w_dim or cfg.latent_dim
    synthesis = StyleSynthesis(w_dim, cfg.resolution, cfg.channels, base, s.fmap_max)
    G = StyleGANGenerator(
        cfg.latent_dim,
        w_dim,
        s.mapping_layers,
        synthesis,
        s.mapping_lr_mul,
        s.w_avg_beta,
        s.truncation_psi,
        s.truncation_cutoff,
    )
    D = ProGANDiscriminator(cfg.resolution, cfg.channels, base, s.fmap_max, s.mbstd_group, blur=True)
    return G, D
