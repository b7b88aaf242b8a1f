"""StyleGAN: shapes per stage, fade-in, AdaIN and noise by hand, truncation, mixing, parameter counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from ganray.config import ConfigError, ModelConfig, StyleGANConfig, load_config
from ganray.models import build_models
from ganray.models.stylegan import StyleEpilogue


def tiny(resolution=32, **kw):
    s = dict(network_capacity=1, fmap_max=8, w_dim=8, mapping_layers=2)
    s.update(kw)
    return ModelConfig(arch="stylegan", resolution=resolution, latent_dim=8, stylegan=StyleGANConfig(**s))


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    G, D = build_models(tiny())
    with torch.no_grad():  # noise on, so that 'noise is irrelevant' below is not trivially true
        for m in G.modules():
            if isinstance(m, StyleEpilogue):
                m.noise_strength.normal_()
    return G.eval(), D.eval()


def test_shapes_per_stage(nets):
    G, D = nets
    assert G.resolutions() == [4, 8, 16, 32] and G.num_ws == 8
    assert G.noise_shapes == [4, 4, 8, 8, 16, 16, 32, 32]
    z = torch.randn(4, 8)
    for res in (4, 8, 16, 32):
        for alpha in (0.0, 0.5, 1.0):
            G.set_stage(res, alpha)
            D.set_stage(res, alpha)
            img = G(z)
            assert img.shape == (4, 1, res, res)
            assert D(img).shape == (4,)
            assert G.active_ws == 2 * int(math.log2(res)) - 2
    G.set_stage(32)
    D.set_stage(32)


def test_fresh_model_is_full_resolution():
    G, D = build_models(tiny())
    assert G(torch.randn(2, 8)).shape == (2, 1, 32, 32)
    assert (G.stage_resolution, G.alpha, D.stage_resolution, D.alpha) == (32, 1.0, 32, 1.0)


@pytest.mark.parametrize("res", [8, 16, 32])
def test_generator_fade(nets, res):
    G, _ = nets
    z = torch.randn(3, 8)
    ws = G.mapping(z)
    with torch.no_grad():
        G.set_stage(res // 2, 1.0)
        previous = G(z, noise_mode="const")
        G.set_stage(res, 0.0)
        assert torch.equal(G(z, noise_mode="const"), F.interpolate(previous, scale_factor=2, mode="nearest"))
        G.set_stage(res, 1.0)
        new_block_alone = G.synthesis.torgb[str(res)](G.synthesis.features(ws, res, "const")[-1])
        assert torch.equal(G(z, noise_mode="const"), new_block_alone)
        G.set_stage(res, 0.25)
        blend = 0.75 * F.interpolate(previous, scale_factor=2) + 0.25 * new_block_alone
        assert torch.allclose(G(z, noise_mode="const"), blend, atol=1e-6)
    G.set_stage(32)


@pytest.mark.parametrize("res", [8, 16, 32])
def test_discriminator_fade(nets, res):
    _, D = nets
    img = torch.randn(4, 1, res, res)
    with torch.no_grad():
        D.set_stage(res // 2, 1.0)
        previous = D(F.avg_pool2d(img, 2))
        D.set_stage(res, 0.0)
        assert torch.equal(D(img), previous)
        D.set_stage(res, 1.0)
        assert not torch.allclose(D(img), previous)
    D.set_stage(32)


def test_adain_normalises_then_applies_the_style_exactly():
    epi = StyleEpilogue(channels=2, w_dim=3, res=2)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [2.0, 2.0]]]])  # [1, 2, 2, 2], all > 0
    w = torch.tensor([[1.0, 2.0, 0.0]])
    with torch.no_grad():
        # Effective affine (equalized lr: stored weight * 1/sqrt(3)): rows give scale0, scale1, shift0, shift1.
        effective = torch.tensor([[1.0, 0.5, 7.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [-1.0, -1.0, 0.0]])
        epi.adain.style.weight.copy_(effective * math.sqrt(3))
        epi.adain.style.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0]))
        out = epi(x, w, noise_mode="none")
    # Styles: scale = (1 + 1, 0.5) = (2, 0.5), shift = (1, -3).
    # Channel 0: mean 2.5, biased variance 1.25; channel 1: mean 1, variance 1.
    c0 = [(v - 2.5) / math.sqrt(1.25 + 1e-8) * 2 + 1 for v in (1, 2, 3, 4)]
    c1 = [(v - 1.0) / math.sqrt(1.0 + 1e-8) * 0.5 - 3 for v in (0, 0, 2, 2)]
    assert torch.allclose(out, torch.tensor([c0, c1]).reshape(1, 2, 2, 2), atol=1e-6)
    # Noise * per-channel strength and the bias come before the leaky ReLU and the norm.
    noise = torch.tensor([[[[0.0, -10.0], [0.0, 0.0]]]])
    with torch.no_grad():
        epi.noise_strength.copy_(torch.tensor([1.0, 0.0]))
        epi.bias.copy_(torch.tensor([0.0, 1.0]))
        got = epi(x, w, noise=noise)
        pre = F.leaky_relu(
            x + noise * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1) + torch.tensor([0.0, 1.0]).view(1, 2, 1, 1),
            0.2,
        )
        want = F.instance_norm(pre, eps=1e-8) * torch.tensor([2.0, 0.5]).view(1, 2, 1, 1) + torch.tensor(
            [1.0, -3.0]
        ).view(1, 2, 1, 1)
    assert torch.allclose(got, want, atol=1e-6)


def test_noise_strength_zero_makes_noise_irrelevant():
    torch.manual_seed(1)
    G, _ = build_models(tiny())  # noise strengths start at 0 (NVlabs)
    G.eval()
    z = torch.randn(2, 8)
    one = [torch.randn(2, 1, s, s) for s in G.noise_shapes]
    two = [torch.randn(2, 1, s, s) * 5 for s in G.noise_shapes]
    with torch.no_grad():
        assert torch.equal(G(z, noise=one), G(z, noise=two))
        assert torch.equal(G(z, noise_mode="random"), G(z, noise_mode="none"))
        G.synthesis.blocks[2].epilogue1.noise_strength.fill_(0.3)  # one layer at 16 px
        assert not torch.allclose(G(z, noise=one), G(z, noise=two))


def test_truncation_psi_zero_gives_the_w_avg_image_for_every_seed(nets):
    G, _ = nets
    G.train()
    G.mapping(torch.randn(64, 8))  # move w_avg away from 0
    G.eval()
    with torch.no_grad():
        imgs = G(torch.randn(3, 8), psi=0.0, noise_mode="const")
        avg = G.synthesis(G.w_avg.expand(1, -1), noise_mode="const")
    assert torch.allclose(imgs, avg.expand_as(imgs), atol=1e-5)


def test_style_mixing_crossover_extremes_equal_single_latent_images(nets):
    G, _ = nets
    z1, z2 = torch.randn(3, 8), torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(G(z1, mix_z=z2, crossover=G.num_ws, noise_mode="const"), G(z1, noise_mode="const"))
        assert torch.allclose(G(z1, mix_z=z2, crossover=0, noise_mode="const"), G(z2, noise_mode="const"))
        mid = G(z1, mix_z=z2, crossover=4, noise_mode="const")
        assert not torch.allclose(mid, G(z1, noise_mode="const"), atol=1e-4)


def test_parameter_counts_match_hand_computation():
    # 8 px, 1 channel, z 4, w 3, mapping 2, channel_base 2 * 1 * 8 = 16: 4 maps at 4 px, 2 at 8 px.
    G, D = build_models(
        ModelConfig(
            arch="stylegan",
            resolution=8,
            latent_dim=4,
            stylegan=StyleGANConfig(network_capacity=1, w_dim=3, mapping_layers=2, truncation_cutoff=4),
        )
    )
    mapping = (4 * 3 + 3) + (3 * 3 + 3)

    def epilogue(c):  # noise strength + bias per channel, affine w -> (scale, shift) per channel
        return c + c + (3 * 2 * c + 2 * c)

    block4 = 4 * 4 * 4 + epilogue(4) + 4 * 4 * 9 + epilogue(4)  # const, epilogue, conv (no bias), epilogue
    block8 = 2 * 4 * 9 + epilogue(2) + 2 * 2 * 9 + epilogue(2)
    torgb = (4 + 1) + (2 + 1)
    assert sum(p.numel() for p in G.parameters()) == mapping + block4 + block8 + torgb == 471
    fromrgb = (4 + 4) + (2 + 2)
    dblock8 = (2 * 2 * 9 + 2) + (2 * 4 * 9 + 4)
    epilogue_d = (5 * 4 * 9 + 4) + (64 * 4 + 4) + (4 + 1)  # mbstd conv, dense, logit
    assert sum(p.numel() for p in D.parameters()) == fromrgb + dblock8 + epilogue_d == 575


def test_growing_config_and_hostile_values():
    sets = ["model.arch=stylegan", "train.progressive.enabled=true"]
    cfg = load_config(None, sets)
    assert cfg.model.stylegan.truncation_psi == 0.7 and cfg.model.stylegan.truncation_cutoff == 8
    assert cfg.model.stylegan.mapping_layers == 8 and cfg.model.stylegan.mapping_lr_mul == 0.01
    bad = {
        "model.stylegan.truncation_cutoff=9": "truncation_cutoff .9. is above the 8 styles",
        "model.stylegan.truncation_cutoff=0": "model.stylegan.truncation_cutoff",
        "model.stylegan.truncation_psi=5": "model.stylegan.truncation_psi",
        "model.stylegan.truncation_psi=nan": "model.stylegan.truncation_psi",
        "train.progressive.start_resolution=16": "train.progressive.start_resolution",
        "model.stylegan.mapping_layers=0": "model.stylegan.mapping_layers",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config(None, [*sets, override])
    # At 64 px there are 10 styles: cutoff 9 is fine there.
    load_config(
        None, [*sets, "model.resolution=64", "data.resolution=64", "model.stylegan.truncation_cutoff=9"]
    )


@pytest.mark.parametrize("res,alpha", [(4, 1.0), (8, 0.5), (32, 1.0)])
def test_every_parameter_is_in_the_graph_only_used_ones_learn(res, alpha):
    # DDP without find_unused_parameters needs a gradient for every parameter.
    G, D = build_models(tiny())
    G.set_stage(res, alpha)
    D.set_stage(res, alpha)
    D(G(torch.randn(4, 8))).sum().backward()
    stages = {str(res), str(res // 2)} if alpha < 1 else {str(res)}
    for prefix, net, heads in (("G", G, "synthesis.torgb"), ("D", D, "fromrgb")):
        for name, p in net.named_parameters():
            assert p.grad is not None, f"{prefix}.{name}"
            if name.startswith(heads):
                learns = name.split(".")[-2] in stages
            elif name.startswith("synthesis.blocks."):
                learns = 4 * 2 ** int(name.split(".")[2]) <= res
            elif name.startswith("blocks."):
                learns = int(name.split(".")[1]) <= res
            else:
                learns = True
            assert bool(p.grad.abs().sum() > 0) == learns, f"{prefix}.{name}"


def test_quickstart_preset_grows_from_4_to_32_px_within_its_epochs():
    from ganray.train.progressive import build_schedule

    cfg = load_config("stylegan-quickstart")
    sched = build_schedule(cfg)
    images = cfg.train.epochs * round(cfg.data.subset * (1 - cfg.data.val_fraction))  # one pass per epoch
    assert sched.stage(0).resolution == 4 and sched.stage(images - 1).resolution == 32
    assert sched.stage(images - 1).alpha == 1.0  # the fade into 32 px is over before the end
    assert cfg.train.reg.style_mixing == 0.9 and cfg.train.loss == "bce" and cfg.train.reg.r1_gamma > 0
    wgan = load_config("stylegan-quickstart", ["train.loss=wgan-gp", "train.reg.r1_gamma=0"])
    assert wgan.train.loss == "wgan-gp" and wgan.train.drift > 0
