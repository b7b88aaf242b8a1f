"""ganray.analysis.style and .inspect on freshly built generators of every mapping variant (and plain DCGAN)."""

from __future__ import annotations

import pytest
import torch

from ganray.analysis import inspect, style
from ganray.config import ModelConfig, load_config
from ganray.models import build_models

MAPPING_ARCHS = ("dcgan-mapping", "dcgan-adain", "dcgan-demod", "stylegan2")


def _g(arch: str, resolution: int = 32):
    torch.manual_seed(0)
    if arch == "stylegan2":
        sets = ["model.arch=stylegan2", f"model.resolution={resolution}", f"data.resolution={resolution}"]
        sets += [
            "model.channels=1",
            "data.channels=1",
            "model.latent_dim=8",
            "model.stylegan2.network_capacity=2",
        ]
        sets += ["model.stylegan2.fmap_max=16", "model.stylegan2.w_dim=8", "model.stylegan2.mapping_layers=2"]
        cfg = load_config(None, sets).model
    else:
        cfg = ModelConfig(arch=arch, resolution=resolution, ngf=8, ndf=8, latent_dim=16, mapping_layers=2)
    G, D = build_models(cfg)
    return G.eval(), D.eval()


@pytest.mark.parametrize("arch", MAPPING_ARCHS)
def test_mixing_with_no_layers_or_all_layers_gives_the_single_latent_images(arch):
    G, _ = _g(arch)
    assert style.has_style(G)
    rows, cols = [1, 2], [3, 4, 5]
    none = style.style_mixing_grid(G, rows, cols, range(0))
    every = style.style_mixing_grid(G, rows, cols, range(G.num_ws))
    n = len(cols) + 1
    assert none.shape == ((len(rows) + 1) * n, 1, 32, 32)
    row_imgs = style.synthesize(G, style.ws_from_seeds(G, rows)).clamp(-1, 1)
    col_imgs = style.synthesize(G, style.ws_from_seeds(G, cols)).clamp(-1, 1)
    for i in range(len(rows)):
        cells = slice((i + 1) * n + 1, (i + 2) * n)
        assert torch.allclose(none[cells], row_imgs[i : i + 1].expand(len(cols), -1, -1, -1), atol=1e-5)
        assert torch.allclose(every[cells], col_imgs, atol=1e-5)
    assert torch.allclose(none[1:n], col_imgs, atol=1e-5) and (none[0] == -1).all()


@pytest.mark.parametrize("arch", ["dcgan-adain", "dcgan-demod", "stylegan2"])
def test_layer_groups_split_the_styles_and_each_group_changes_the_image(arch):
    G, _ = _g(arch, 64)
    groups = style.layer_groups(G.num_ws)
    assert [i for r in groups.values() for i in r] == list(range(G.num_ws))
    base = style.style_mixing_grid(G, [1], [2], range(0))[-1]
    for name, layers in groups.items():
        if len(layers):
            mixed = style.style_mixing_grid(G, [1], [2], layers)[-1]
            assert not torch.allclose(mixed, base), name


def test_truncation_psi_zero_is_the_w_average_image_for_every_seed():
    G, _ = _g("dcgan-adain")
    out = style.truncation_sweep(G, [1, 2, 3], [0.0, 1.0])
    assert out.shape[0] == 6
    assert torch.allclose(out[0], out[2], atol=1e-5) and torch.allclose(out[0], out[4], atol=1e-5)
    assert not torch.allclose(out[1], out[3])
    assert torch.allclose(out[1:2], G(style.z_from_seeds(G, [1])), atol=1e-5)  # psi 1 = plain sample


def test_w_average_uses_a_tracked_one_when_the_generator_has_it():
    G, _ = _g("stylegan2")
    G.w_avg.fill_(0.5)
    assert torch.equal(style.w_average(G), torch.full((G.w_dim,), 0.5))
    out = style.truncation_sweep(G, [1, 2], [0.0])
    want = style.synthesize(G, torch.full((1, G.num_ws, G.w_dim), 0.5)).clamp(-1, 1)
    assert torch.allclose(out[0:1], want, atol=1e-5) and torch.allclose(out[1:2], want, atol=1e-5)


@pytest.mark.parametrize("space", ["z", "w"])
@pytest.mark.parametrize("arch", ["dcgan-demod", "stylegan2"])
def test_interpolation_starts_and_ends_at_the_seeds(space, arch):
    G, _ = _g(arch)
    frames = style.interpolate(G, 11, 12, 5, space)
    ends = style.synthesize(G, style.ws_from_seeds(G, [11, 12])).clamp(-1, 1)
    assert frames.shape[0] == 5
    assert torch.allclose(frames[0], ends[0], atol=1e-4) and torch.allclose(frames[-1], ends[1], atol=1e-4)
    assert not torch.allclose(frames[2], frames[0])
    with pytest.raises(ValueError, match="'z' or 'w'"):
        style.interpolate(G, 1, 2, 3, "x")


def test_slerp_keeps_the_norm_of_equal_norm_endpoints():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    assert style.slerp(a, b, 0.5).norm().item() == pytest.approx(3.0, rel=1e-5)


def test_five_latent_mixing_takes_each_block_of_layers_from_its_source():
    G, _ = _g("dcgan-demod", 64)  # 5 style layers: one per source
    seeds = [1, 2, 3, 4, 5]
    out = style.mix_many(G, seeds)
    ws = style.ws_from_seeds(G, seeds)
    want = torch.stack([ws[i, i] for i in range(5)]).unsqueeze(0)
    assert out.shape[0] == 6 and torch.allclose(out[-1:], style.synthesize(G, want).clamp(-1, 1), atol=1e-5)


@pytest.mark.parametrize("arch", ["dcgan", "dcgan-demod", "stylegan2"])
def test_filters_activations_and_architecture(arch):
    G, D = _g(arch)
    name, tiles = inspect.first_layer_filters(D)
    if arch != "stylegan2":
        assert tiles.shape == (8, 1, 4, 4) and name == "net.0"  # ndf filters over the grey input
    assert tiles.dim() == 4 and tiles.shape[1] in (1, 3) and tiles.min() >= -1 and tiles.max() <= 1
    name, act = inspect.block_activations(G, style.z_from_seeds(G, [7]), 0)
    assert act.dim() == 4 and act.shape[1] == 1 and act.shape[0] <= inspect.MAX_TILES
    text = inspect.architecture(G, "Generator")
    assert text.splitlines()[0] == f"Generator: {type(G).__name__}, {inspect.count(G):,} parameters"
    first_level = [ln for ln in text.splitlines()[1:] if ln.startswith("  ") and not ln.startswith("    ")]
    total = sum(int(ln.rsplit("[", 1)[1].rstrip("]").replace(",", "")) for ln in first_level)
    assert total == inspect.count(G)  # the top-level modules' counts add up to the whole


def test_filters_of_an_rgb_first_layer_are_colour_tiles():
    torch.manual_seed(0)
    _, D = build_models(ModelConfig(arch="dcgan", resolution=32, channels=3, ngf=8, ndf=8))
    _, tiles = inspect.first_layer_filters(D)
    assert tiles.shape == (8, 3, 4, 4)
