"""ganray.analysis.images (style figures through ganray.style) and .inspect on freshly built networks of every family.

The style math itself is tested with ganray.style (tests/test_style.py); here: which figures a
generator gets, that they decode, and that filters/activations/architecture work for every model."""

from __future__ import annotations

import pytest
import torch

from ganray.analysis import images, inspect
from ganray.config import ModelConfig, load_config
from ganray.inference import seed_noise
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
def test_mapping_generators_get_every_style_figure(arch):
    G, _ = _g(arch, 64)
    figs = images.style_figures(G, "trial t, epoch 1")
    names = {f.path for f in figs}
    assert {"images/truncation.png", "images/interp_z.gif", "images/interp_w.gif"} <= names
    mixing = "images/mixing_5_latents.png" in names and any("style_mixing_" in n for n in names)
    assert mixing == (G.num_ws > 1)  # dcgan-mapping feeds one w to the whole generator: nothing to mix
    for f in figs:
        im = images.decode(f.data)
        assert im.width > 0 and f.caption.endswith("trial t, epoch 1")
        if f.path.endswith(".gif"):
            assert im.n_frames == images.INTERP_FRAMES
    trunc = images.decode(next(f.data for f in figs if f.path.endswith("truncation.png")))
    assert trunc.size == (
        len(images.PSIS) * 66 + 2,
        len(images.TRUNC_SEEDS) * 66 + 2,
    )  # 64 px tiles, 2 px padding


def test_style_layers_split_into_contiguous_blocks():
    assert images._split(5, 5) == [[0], [1], [2], [3], [4]]
    assert images._split(3, 5) == [[], [0], [], [1], [2]]
    assert sum(images._split(12, 5), []) == list(range(12))


def test_plain_dcgan_has_no_mapping_and_gets_no_style_figures():
    G, _ = _g("dcgan")
    assert not images.has_mapping(G) and images.has_mapping(_g("dcgan-adain")[0])


@pytest.mark.parametrize("arch", ["dcgan", "dcgan-demod", "stylegan2"])
def test_filters_activations_and_architecture(arch):
    G, D = _g(arch)
    name, tiles = inspect.first_layer_filters(D)
    if arch != "stylegan2":
        assert tiles.shape == (8, 1, 4, 4) and name == "net.0"  # ndf filters over the grey input
    assert tiles.dim() == 4 and tiles.shape[1] in (1, 3) and tiles.min() >= -1 and tiles.max() <= 1
    name, act = inspect.block_activations(G, seed_noise([7], G.latent_dim), 0)
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
