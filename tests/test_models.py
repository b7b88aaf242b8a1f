"""ganray.models: shapes, exact parameter counts, registry and the StyleGAN layers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ganray.config import ARCHS, ConfigError, ModelConfig
from ganray.models import build_models, list_archs, register_arch, uses_batch_stats
from ganray.models.dcgan import DCGANGenerator
from ganray.models.layers import AdaIN, EqualLinear, MappingNetwork, ModulatedConv2d, PixelNorm
from ganray.train.progressive import GROWING_ARCHS

MAPPING_ARCHS = ("dcgan-mapping", "dcgan-adain", "dcgan-demod")
DCGAN_ARCHS = tuple(a for a in ARCHS if a.startswith("dcgan"))  # stylegan2: tests/test_stylegan2.py


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def small(**kw) -> ModelConfig:
    """Narrow networks keep the shape tests cheap on CPU."""
    base = dict(ngf=8, ndf=8, latent_dim=16, mapping_layers=2)
    return ModelConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("arch", DCGAN_ARCHS)
@pytest.mark.parametrize("resolution", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_range(arch, resolution, channels):
    G, D = build_models(small(arch=arch, resolution=resolution, channels=channels))
    assert G.latent_dim == 16
    z = torch.randn(3, G.latent_dim) * 3  # large z: tanh must still bound the output
    x = G(z)
    assert x.shape == (3, channels, resolution, resolution)
    assert x.abs().max() <= 1.0
    assert x.std() > 1e-3  # not a constant image
    logits = D(x)
    assert logits.shape == (3,)
    assert torch.isfinite(logits).all()


def test_registry_matches_config_choices():
    assert set(list_archs()) == set(ARCHS)


def test_unknown_arch_lists_registered_names():
    cfg = dataclasses.replace(ModelConfig(), arch="stylegan9")
    with pytest.raises(ConfigError, match="stylegan9") as err:
        build_models(cfg)
    for name in ARCHS:
        assert name in str(err.value)


def test_duplicate_registration_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_arch("dcgan")(lambda cfg: (nn.Identity(), nn.Identity()))


# ---------------------------------------------------------------- exact parameter counts
# ngf = ndf = 64, latent 100, 1 channel. A 4x4 conv c_in -> c_out has
# c_in * c_out * 16 weights (+ c_out bias if no BatchNorm follows);
# BatchNorm(c) has 2c parameters (weight, bias).


def test_dcgan_param_counts_32px():
    G, D = build_models(ModelConfig(arch="dcgan", resolution=32, channels=1, ngf=64, ndf=64))
    g = (
        (100 * 256 * 16 + 2 * 256)  # project z -> 256 x 4x4, BN       409,600 + 512
        + (256 * 128 * 16 + 2 * 128)  # 4 -> 8, BN                     524,288 + 256
        + (128 * 64 * 16 + 2 * 64)  # 8 -> 16, BN                      131,072 + 128
        + (64 * 1 * 16 + 1)  # 16 -> 32 image, bias                      1,024 + 1
    )
    d = (
        (1 * 64 * 16 + 64)  # 32 -> 16, bias (no BN on layer 1)          1,024 + 64
        + (64 * 128 * 16 + 2 * 128)  # 16 -> 8, BN                     131,072 + 256
        + (128 * 256 * 16 + 2 * 256)  # 8 -> 4, BN                     524,288 + 512
        + (256 * 1 * 16 + 1)  # 4x4 -> logit, bias                       4,096 + 1
    )
    assert (g, d) == (1_066_881, 661_313)
    assert (n_params(G), n_params(D)) == (g, d)


def test_dcgan_param_counts_64px():
    G, D = build_models(ModelConfig(arch="dcgan", resolution=64, channels=1, ngf=64, ndf=64))
    g = (
        (100 * 512 * 16 + 2 * 512)  # project z -> 512 x 4x4, BN      819,200 + 1,024
        + (512 * 256 * 16 + 2 * 256)  # 4 -> 8, BN                   2,097,152 + 512
        + (256 * 128 * 16 + 2 * 128)  # 8 -> 16, BN                    524,288 + 256
        + (128 * 64 * 16 + 2 * 64)  # 16 -> 32, BN                     131,072 + 128
        + (64 * 1 * 16 + 1)  # 32 -> 64 image, bias                      1,024 + 1
    )
    d = (
        (1 * 64 * 16 + 64)  # 64 -> 32, bias                             1,024 + 64
        + (64 * 128 * 16 + 2 * 128)  # 32 -> 16, BN                    131,072 + 256
        + (128 * 256 * 16 + 2 * 256)  # 16 -> 8, BN                    524,288 + 512
        + (256 * 512 * 16 + 2 * 512)  # 8 -> 4, BN                   2,097,152 + 1,024
        + (512 * 1 * 16 + 1)  # 4x4 -> logit, bias                       8,192 + 1
    )
    assert (g, d) == (3_574_657, 2_763_585)
    assert (n_params(G), n_params(D)) == (g, d)


def test_capacity_knobs_change_counts_as_expected():
    base = ModelConfig(arch="dcgan", resolution=32, ngf=64, ndf=64)
    G0, D0 = build_models(base)
    # latent_dim only touches the projection: 50 extra inputs x 256 channels x 4x4.
    G1, D1 = build_models(dataclasses.replace(base, latent_dim=150))
    assert n_params(G1) - n_params(G0) == 50 * 256 * 16 and n_params(D1) == n_params(D0)
    # Halving ngf quarters the hidden-to-hidden conv weights; BN and the image layer shrink linearly.
    G2, _ = build_models(dataclasses.replace(base, ngf=32))
    assert n_params(G2) == (100 * 128 * 16 + 256) + (128 * 64 * 16 + 128) + (64 * 32 * 16 + 64) + (
        32 * 16 + 1
    )
    # ndf changes D only.
    G3, D3 = build_models(dataclasses.replace(base, ndf=32))
    assert n_params(G3) == n_params(G0)
    assert n_params(D3) == (1 * 32 * 16 + 32) + (32 * 64 * 16 + 128) + (64 * 128 * 16 + 256) + (128 * 16 + 1)
    # batchnorm_g=False: every BN (2c) is replaced by a conv bias (c).
    G4, _ = build_models(dataclasses.replace(base, batchnorm_g=False))
    assert n_params(G0) - n_params(G4) == 256 + 128 + 64
    assert not uses_batch_stats(G4)


def test_mapping_knobs_change_counts_as_expected():
    base = ModelConfig(arch="dcgan-mapping", resolution=32, latent_dim=100, mapping_layers=4)
    G0, _ = build_models(base)
    G_plain, _ = build_models(dataclasses.replace(base, arch="dcgan"))
    # w_dim 0 -> w_dim = latent_dim: mapping adds 4 layers of 100 x 100 weights + 100 biases.
    assert G0.w_dim == 100
    assert n_params(G0) - n_params(G_plain) == 4 * (100 * 100 + 100)
    G1, _ = build_models(dataclasses.replace(base, mapping_layers=6))
    assert n_params(G1) - n_params(G0) == 2 * (100 * 100 + 100)
    G2, _ = build_models(dataclasses.replace(base, w_dim=64))
    # mapping 100->64, 3 x 64->64; projection now 64 inputs x 256 x 16.
    mapping = (100 * 64 + 64) + 3 * (64 * 64 + 64)
    assert n_params(G2) == n_params(G_plain) - 100 * 256 * 16 + 64 * 256 * 16 + mapping


# ---------------------------------------------------------------- normalization


def test_batch_stats_per_arch():
    for arch in DCGAN_ARCHS:
        G, D = build_models(small(arch=arch))
        assert uses_batch_stats(D)
        assert uses_batch_stats(G) == (arch in ("dcgan", "dcgan-mapping"))


def test_spectral_norm_discriminator():
    _, D = build_models(small(spectral_norm=True))
    assert not uses_batch_stats(D)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4  # 3 stride-2 convs at 32 px + the logit conv
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    assert all(c.bias is not None for c in convs)  # no BatchNorm, so every conv keeps its bias
    D.train()
    D(torch.randn(2, 1, 32, 32))  # one power iteration
    for c in convs:
        sigma = torch.linalg.matrix_norm(c.weight.detach().flatten(1), ord=2)
        assert sigma < 1.05  # normalized weight has spectral norm ~<= 1


def test_dcgan_init():
    G, D = build_models(ModelConfig(arch="dcgan", resolution=32))
    convs = [m for m in [*G.modules(), *D.modules()] if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    w = torch.cat([c.weight.flatten() for c in convs])
    assert abs(w.std().item() - 0.02) < 1e-3 and abs(w.mean().item()) < 1e-3
    bns = [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_w = torch.cat([b.weight.flatten() for b in bns])
    assert abs(bn_w.mean().item() - 1.0) < 5e-3 and bn_w.std().item() < 0.03
    assert all(b.bias.abs().max() == 0 for b in bns)


# ---------------------------------------------------------------- mapping variants


@pytest.mark.parametrize("arch", MAPPING_ARCHS)
def test_mapping_and_synthesis(arch):
    G, _ = build_models(small(arch=arch, w_dim=12))
    G.eval()
    z = torch.randn(4, 16)
    w = G.mapping(z)
    assert w.shape == (4, 12) and G.w_dim == 12
    torch.testing.assert_close(G(z), G.synthesis(w))
    # Per-layer styles: the same w at every layer equals a single w.
    ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
    torch.testing.assert_close(G.synthesis(ws), G.synthesis(w))
    with pytest.raises(ValueError, match="w_dim"):
        G.synthesis(ws[:, :1].repeat(1, G.num_ws + 1, 1))


@pytest.mark.parametrize("arch", ["dcgan-adain", "dcgan-demod"])
def test_per_layer_styles_matter(arch):
    G, _ = build_models(small(arch=arch))
    w = G.mapping(torch.randn(2, 16))
    ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
    ws[:, -1] = G.mapping(torch.randn(2, 16))  # style mixing at the finest layer
    assert not torch.allclose(G.synthesis(ws), G.synthesis(w))


def test_plain_dcgan_has_no_mapping():
    G, _ = build_models(small(arch="dcgan"))
    assert isinstance(G, DCGANGenerator) and not hasattr(G, "mapping")


# ---------------------------------------------------------------- layers


def test_pixelnorm_unit_rms():
    x = torch.randn(5, 32) * 7
    torch.testing.assert_close(PixelNorm()(x).pow(2).mean(dim=1), torch.ones(5))


def test_equal_linear_lr_multiplier():
    layer = EqualLinear(256, 64, lr_mul=0.01, bias_init=0.5)
    # Stored weights are 1/lr_mul larger than the effective N(0, 1/fan_in) weights,
    # so gradient steps on them move the output lr_mul times as much.
    assert abs(layer.weight.std().item() - 100.0) < 5.0
    effective = layer.weight * layer.scale
    assert abs(effective.std().item() - 256**-0.5) < 0.005
    torch.testing.assert_close(layer(torch.zeros(2, 256)), torch.full((2, 64), 0.5))


def test_mapping_network_depth():
    m = MappingNetwork(16, 8, num_layers=3)
    assert sum(isinstance(x, EqualLinear) for x in m.modules()) == 3
    assert all(x.lr_mul == 0.01 for x in m.modules() if isinstance(x, EqualLinear))
    assert m(torch.randn(4, 16)).shape == (4, 8)


def test_adain_sets_channel_statistics():
    layer = AdaIN(6, w_dim=4)
    w = torch.randn(3, 4)
    scale, shift = layer.style(w).chunk(2, dim=1)
    y = layer(torch.randn(3, 6, 8, 8) * 5 + 2, w)
    torch.testing.assert_close(y.mean(dim=(2, 3)), shift, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y.std(dim=(2, 3), unbiased=False), scale.abs(), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("style_scale", [0.1, 1.0, 30.0])
def test_demodulation_normalizes_output(style_scale):
    conv = ModulatedConv2d(64, 8, 3, w_dim=16, demodulate=True, bias=False)
    x = torch.randn(4, 64, 24, 24)  # unit-variance input
    y = conv(x, torch.randn(4, 16) * style_scale)
    interior = y[:, :, 1:-1, 1:-1]  # border pixels see zero padding
    assert abs(interior.std().item() - 1.0) < 0.05


def test_without_demodulation_output_follows_style():
    conv = ModulatedConv2d(64, 8, 3, w_dim=16, demodulate=False, bias=False)
    x = torch.randn(4, 64, 24, 24)
    w = torch.randn(4, 16)
    small_out, big_out = conv(x, w * 0.0), conv(x, w * 30.0)
    assert abs(small_out.std().item() - 1.0) < 0.1  # styles are all 1 at w = 0: a plain conv
    assert big_out.std() > 5 * small_out.std()


def test_modulated_conv_matches_per_image_conv():
    conv = ModulatedConv2d(5, 7, 3, w_dim=4)
    x, w = torch.randn(3, 5, 6, 6), torch.randn(3, 4)
    weights = conv.modulated_weight(w)
    expected = torch.cat(
        [torch.nn.functional.conv2d(x[i : i + 1], weights[i], conv.bias, padding=1) for i in range(3)]
    )
    torch.testing.assert_close(conv(x, w), expected)


# Growing archs leave other stages' heads at zero gradient: tests/test_progan.py, tests/test_stylegan.py.
@pytest.mark.parametrize("arch", [a for a in ARCHS if a not in GROWING_ARCHS])
def test_every_parameter_gets_a_gradient(arch):
    # DDP (without find_unused_parameters) fails on parameters that take no part in the loss.
    G, D = build_models(small(arch=arch, spectral_norm=arch == "dcgan-demod"))
    D(G(torch.randn(2, 16))).sum().backward()
    for name, p in [*G.named_parameters(), *D.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
