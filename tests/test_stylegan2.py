"""StyleGAN2 family: operators (FIR, equalized lr, modulated conv, mbstd) and the G/D networks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ganray.config import ConfigError, load_config
from ganray.models import build_models
from ganray.models.ops import (
    EqualConv2d,
    downsample2d,
    minibatch_stddev,
    modulated_conv2d,
    setup_filter,
    upsample2d,
)

FIR = setup_filter()


def tiny_cfg(resolution=32, channels=1, g_arch="skip", d_arch="resnet", **s2):
    sets = {"network_capacity": 2, "fmap_max": 16, "w_dim": 8, "mapping_layers": 2, **s2}
    overrides = [
        "model.arch=stylegan2",
        f"model.resolution={resolution}",
        f"data.resolution={resolution}",
        f"model.channels={channels}",
        f"data.channels={channels}",
        "model.latent_dim=8",
        f"model.stylegan2.g_arch={g_arch}",
        f"model.stylegan2.d_arch={d_arch}",
    ] + [f"model.stylegan2.{k}={v}" for k, v in sets.items()]
    return load_config(None, overrides)


def build(**kw):
    torch.manual_seed(0)
    return build_models(tiny_cfg(**kw).model)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------- operators


def _up_matrix(n: int) -> torch.Tensor:
    """[1,3,3,1] 2x upsampling in 1-D by hand: y[2m] = .75 x[m] + .25 x[m-1], y[2m+1] = .75 x[m] + .25 x[m+1]."""
    u = torch.zeros(2 * n, n)
    for m in range(n):
        u[2 * m, m] += 0.75
        u[2 * m + 1, m] += 0.75
        if m > 0:
            u[2 * m, m - 1] += 0.25
        if m + 1 < n:
            u[2 * m + 1, m + 1] += 0.25
    return u


def _down_matrix(n: int) -> torch.Tensor:
    """[1,3,3,1]/8 2x downsampling by hand: y[m] = (x[2m-1] + 3 x[2m] + 3 x[2m+1] + x[2m+2]) / 8."""
    d = torch.zeros(n // 2, n)
    for m in range(n // 2):
        for j, tap in zip(range(2 * m - 1, 2 * m + 3), (1, 3, 3, 1)):
            if 0 <= j < n:
                d[m, j] = tap / 8
    return d


def test_fir_upsample_and_downsample_match_direct_computation():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    u, d = _up_matrix(8).double(), _down_matrix(8).double()
    assert torch.allclose(upsample2d(x, FIR.double()), u @ x @ u.T, atol=1e-12)
    assert torch.allclose(downsample2d(x, FIR.double()), d @ x @ d.T, atol=1e-12)


def test_equalized_lr_scales_weights_at_run_time():
    conv = EqualConv2d(6, 4, 3, activation=False)
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.3)  # stored N(0, 1)
    x = torch.randn(2, 6, 5, 5)
    expected = F.conv2d(x, conv.weight / math.sqrt(6 * 9), conv.bias, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-6)


def test_demodulated_conv_keeps_unit_variance():
    torch.manual_seed(0)
    x = torch.randn(8, 64, 16, 16)
    weight, styles = torch.randn(64, 64, 3, 3), torch.randn(8, 64).abs() * 3 + 0.1
    # 2x upsampling then smooths white noise: each output is .75 a + .25 b per axis
    # (see _up_matrix), variance (.75^2 + .25^2)^2 = 0.390625, std 0.625.
    for up, expected in ((1, 1.0), (2, 0.625)):
        y = modulated_conv2d(x, weight, styles, FIR, up=up)
        std = y[:, :, 2:-2, 2:-2].std().item()  # away from the zero-padded border
        assert std == pytest.approx(expected, abs=0.1), (up, std)


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_scale_conv_scale_paths_agree(up, demodulate):
    x, weight, styles = torch.randn(3, 5, 8, 8), torch.randn(7, 5, 3, 3), torch.randn(3, 5)
    fused = modulated_conv2d(x, weight, styles, FIR, demodulate=demodulate, up=up, fused=True)
    unfused = modulated_conv2d(x, weight, styles, FIR, demodulate=demodulate, up=up, fused=False)
    assert fused.shape == (3, 7, 8 * up, 8 * up)
    assert torch.allclose(fused, unfused, atol=1e-4)


def test_minibatch_stddev_uses_consecutive_groups_so_a_split_batch_agrees():
    x = torch.randn(8, 4, 3, 3)
    y = minibatch_stddev(x, 4)
    assert y.shape == (8, 5, 3, 3)
    by_hand = x[:4].std(dim=0, unbiased=False).mean()
    assert torch.allclose(y[0, 4], by_hand.expand(3, 3), atol=1e-5)
    halves = torch.cat([minibatch_stddev(x[:4], 4), minibatch_stddev(x[4:], 4)])
    assert torch.equal(y, halves)
    ragged = minibatch_stddev(x[:6], 4)  # a ragged batch uses groups of gcd(4, 6) = 2
    assert torch.allclose(ragged[4, 4], x[4:6].std(dim=0, unbiased=False).mean().expand(3, 3), atol=1e-5)


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("resolution,channels", [(32, 1), (64, 3)])
@pytest.mark.parametrize("g_arch,d_arch", [("skip", "resnet"), ("resnet", "skip"), ("orig", "orig")])
def test_shapes_per_resolution_and_architecture(resolution, channels, g_arch, d_arch):
    G, D = build(resolution=resolution, channels=channels, g_arch=g_arch, d_arch=d_arch)
    log2 = int(math.log2(resolution))
    assert G.num_ws == 2 * log2 - 2  # 8 at 32 px, 10 at 64 px
    assert G.noise_shapes == [4] + [2**r for r in range(3, log2 + 1) for _ in (0, 1)]
    img = G(torch.randn(4, 8))
    assert img.shape == (4, channels, resolution, resolution)
    assert D(img).shape == (4,)


def _mapping_params(z, w, layers):
    return (z * w + w) + (layers - 1) * (w * w + w)


def test_parameter_counts_at_32px_match_hand_computation():
    # capacity 2 at 32 px: channel_base = 2 * 2 * 32 = 128 -> 4px: 16 (fmap_max), 8px: 16, 16px: 8, 32px: 4.
    w, c = 8, 1
    mapping = _mapping_params(8, w, 2)

    def layer(ci, co):  # affine + 3x3 weight + bias + noise strength
        return (w * ci + ci) + co * ci * 9 + co + 1

    def torgb(ci):
        return (w * ci + ci) + c * ci + c

    convs = (
        layer(16, 16) + layer(16, 16) + layer(16, 16) + layer(16, 8) + layer(8, 8) + layer(8, 4) + layer(4, 4)
    )
    const = 16 * 16
    skip_g = mapping + const + convs + torgb(16) + torgb(16) + torgb(8) + torgb(4)
    orig_g = mapping + const + convs + torgb(4)
    resnet_g = orig_g + (16 * 16 + 8 * 16 + 4 * 8)  # 1x1 shortcuts, no bias

    def dblock(ci, co, fromrgb, shortcut):
        n = (ci * ci * 9 + ci) + (co * ci * 9 + co)
        return n + (c * ci + ci if fromrgb else 0) + (co * ci if shortcut else 0)

    epilogue = (17 * 16 * 9 + 16) + (16 * 16 * 16 + 16) + (16 + 1)
    resnet_d = dblock(4, 8, True, True) + dblock(8, 16, False, True) + dblock(16, 16, False, True) + epilogue
    skip_d = dblock(4, 8, True, False) + dblock(8, 16, True, False) + dblock(16, 16, True, False)
    skip_d += epilogue + (c * 16 + 16)
    orig_d = dblock(4, 8, True, False) + dblock(8, 16, False, False) + dblock(16, 16, False, False) + epilogue
    for g_arch, d_arch, g_n, d_n in [
        ("skip", "resnet", skip_g, resnet_d),
        ("resnet", "skip", resnet_g, skip_d),
        ("orig", "orig", orig_g, orig_d),
    ]:
        G, D = build(g_arch=g_arch, d_arch=d_arch)
        assert (n_params(G), n_params(D)) == (g_n, d_n), (g_arch, d_arch)


def test_attention_adds_a_zero_gated_residual():
    G, D = build(attn_layers="16,32")
    G0, _ = build()
    assert n_params(G) > n_params(G0)
    G.eval()
    G0.eval()
    z = torch.randn(2, 8)
    g_state = {k: v for k, v in G.state_dict().items() if "attn" not in k}
    G0.load_state_dict(g_state)
    # gamma starts at 0: the attention block is the identity until it learns.
    assert torch.allclose(G(z, noise_mode="const"), G0(z, noise_mode="const"), atol=1e-6)
    assert D(torch.randn(4, 1, 32, 32)).shape == (4,)
    with pytest.raises(ConfigError, match="attn_layers"):
        build(attn_layers="16,12")


def test_w_avg_tracks_the_mean_w_in_training_mode():
    G, _ = build()
    G.train()
    z = torch.randn(16, 8)
    w = G.mapping_net(z)
    G.mapping(z)
    assert torch.allclose(G.w_avg, torch.zeros(8).lerp(w.mean(0), 1 - 0.995), atol=1e-6)
    G.eval()
    before = G.w_avg.clone()
    G.mapping(z)
    assert torch.equal(G.w_avg, before)


def test_truncation_psi_zero_gives_the_w_avg_image_for_every_seed():
    G, _ = build()
    G.train()
    for _ in range(3):
        G.mapping(torch.randn(32, 8))  # move w_avg away from zero
    G.eval()
    with torch.no_grad():
        avg = G.synthesis(G.w_avg.expand(1, -1), noise_mode="const")
        for seed in range(4):
            z = torch.randn(1, 8, generator=torch.Generator().manual_seed(seed))
            assert torch.allclose(G(z, psi=0.0, noise_mode="const"), avg, atol=1e-5)
        # with a cutoff, only the first layers are truncated: the image differs
        z = torch.randn(1, 8)
        assert not torch.allclose(G(z, psi=0.0, cutoff=2, noise_mode="const"), avg, atol=1e-3)


def test_style_mixing_crossover_extremes_equal_single_latent_images():
    G, _ = build()
    G.eval()
    z1, z2 = torch.randn(3, 8), torch.randn(3, 8)
    with torch.no_grad():
        a = G(z1, mix_z=z2, crossover=G.num_ws, noise_mode="const")
        b = G(z1, mix_z=z2, crossover=0, noise_mode="const")
        mid = G(z1, mix_z=z2, crossover=4, noise_mode="const")
        assert torch.allclose(a, G(z1, noise_mode="const"), atol=1e-6)
        assert torch.allclose(b, G(z2, noise_mode="const"), atol=1e-6)
        assert not torch.allclose(mid, a, atol=1e-4)


def test_noise_inputs_follow_the_mode_and_explicit_noise():
    G, _ = build()
    G.eval()
    z = torch.randn(2, 8)
    with torch.no_grad():
        for layer in G.synthesis.modules():
            if hasattr(layer, "noise_strength"):
                layer.noise_strength.fill_(0.5)
        const = G(z, noise_mode="const")
        assert torch.equal(const, G(z, noise_mode="const"))
        assert not torch.allclose(G(z, noise_mode="random"), G(z, noise_mode="random"))
        noise = [torch.randn(2, 1, s, s) for s in G.noise_shapes]
        assert torch.equal(G(z, noise=noise), G(z, noise=noise))
        zeros = [torch.zeros(2, 1, s, s) for s in G.noise_shapes]
        assert torch.allclose(G(z, noise=zeros), G(z, noise_mode="none"))


def test_return_ws_gives_the_styles_the_image_depends_on():
    G, _ = build()
    img, ws = G(torch.randn(2, 8), return_ws=True)
    assert ws.shape == (2, G.num_ws, 8)
    (grad,) = torch.autograd.grad(img.sum(), ws)
    assert grad.abs().sum(dim=(0, 2)).gt(0).all()  # every layer's style matters
