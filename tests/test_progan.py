"""ProGAN: shapes per stage, and fade-in at alpha 0 / 1 for G and D, checked against the blocks."""

import pytest
import torch
import torch.nn.functional as F

from ganray.config import ModelConfig, ProGANConfig
from ganray.models import build_models


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="progan", resolution=32, latent_dim=8, progan=ProGANConfig(network_capacity=1, fmap_max=8)
    )
    G, D = build_models(cfg)
    return G.eval(), D.eval()


def test_shapes_per_stage(nets):
    G, D = nets
    assert G.resolutions() == [4, 8, 16, 32]
    z = torch.randn(4, 8)
    for res in (4, 8, 16, 32):
        for alpha in (0.0, 0.5, 1.0):
            G.set_stage(res, alpha)
            D.set_stage(res, alpha)
            img = G(z)
            assert img.shape == (4, 1, res, res)
            assert D(img).shape == (4,)
    G.set_stage(32)
    D.set_stage(32)


def test_fresh_model_is_full_resolution(nets):
    G, D = build_models(ModelConfig(arch="progan", progan=ProGANConfig(network_capacity=1, fmap_max=8)))
    assert G(torch.randn(2, 100)).shape == (2, 1, 32, 32)
    assert (G.stage_resolution, G.alpha, D.alpha) == (32, 1.0, 1.0)


@pytest.mark.parametrize("res", [8, 16, 32])
def test_generator_fade(nets, res):
    G, _ = nets
    z = torch.randn(3, 8)
    G.set_stage(res // 2, 1.0)
    previous = G(z)
    G.set_stage(res, 0.0)
    assert torch.equal(G(z), F.interpolate(previous, scale_factor=2, mode="nearest"))
    G.set_stage(res, 1.0)
    new_block_alone = G.torgb[str(res)](G.block(G.features(z, res // 2), res))
    assert torch.equal(G(z), new_block_alone)
    G.set_stage(res, 0.25)
    assert torch.allclose(
        G(z), 0.75 * F.interpolate(previous, scale_factor=2) + 0.25 * new_block_alone, atol=1e-6
    )
    G.set_stage(32)


@pytest.mark.parametrize("res", [8, 16, 32])
def test_discriminator_fade(nets, res):
    _, D = nets
    img = torch.randn(4, 1, res, res)
    D.set_stage(res // 2, 1.0)
    previous = D(F.avg_pool2d(img, 2))
    D.set_stage(res, 0.0)
    assert torch.equal(D(img), previous)
    D.set_stage(res, 1.0)
    full = D(img)
    assert not torch.allclose(full, previous)
    D.set_stage(32)


def test_bad_stage_is_named(nets):
    G, D = nets
    with pytest.raises(ValueError, match="not a stage"):
        G.set_stage(64)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        G.set_stage(8, 1.5)
    with pytest.raises(ValueError, match="takes"):
        D(torch.randn(2, 1, 12, 12))


@pytest.mark.parametrize("res, alpha", [(4, 1.0), (8, 0.5), (32, 1.0)])
def test_every_parameter_is_in_the_graph_only_used_ones_learn(res, alpha):
    # DDP without find_unused_parameters needs a gradient for every parameter.
    cfg = ModelConfig(
        arch="progan", resolution=32, latent_dim=8, progan=ProGANConfig(network_capacity=1, fmap_max=8)
    )
    G, D = build_models(cfg)
    G.set_stage(res, alpha)
    D.set_stage(res, alpha)
    D(G(torch.randn(4, 8))).sum().backward()
    stages = {str(res), str(res // 2)} if alpha < 1 else {str(res)}
    for prefix, net, heads in (("G", G, "torgb"), ("D", D, "fromrgb")):
        for name, p in net.named_parameters():
            assert p.grad is not None, f"{prefix}.{name}"
            part, _, rest = name.partition(".")
            if part == heads:
                learns = rest.split(".")[0] in stages
            elif part == "blocks":
                learns = int(rest.split(".")[0]) <= res
            else:
                learns = True
            assert bool(p.grad.abs().sum() > 0) == learns, f"{prefix}.{name}"
