"""Style tools on a tiny StyleGAN2, a tiny StyleGAN (at a growing stage) and a DCGAN mapping variant."""

import pytest
import torch

from ganray import style
from ganray.config import ModelConfig, load_config
from ganray.models import build_models


def tiny_sg2_config():
    return load_config(
        None,
        [
            "model.arch=stylegan2",
            "model.latent_dim=8",
            "model.stylegan2.network_capacity=2",
            "model.stylegan2.fmap_max=16",
            "model.stylegan2.w_dim=8",
            "model.stylegan2.mapping_layers=2",
        ],
    )


@pytest.fixture(scope="module")
def sg2():
    cfg = tiny_sg2_config()
    torch.manual_seed(0)
    G, _ = build_models(cfg.model)
    G.train()
    for _ in range(3):
        G.mapping(torch.randn(64, 8))  # move w_avg away from 0
    return G.eval()


def tiny_sg1_config():
    return load_config(
        None,
        [
            "model.arch=stylegan",
            "model.latent_dim=8",
            "model.stylegan.network_capacity=2",
            "model.stylegan.fmap_max=16",
            "model.stylegan.w_dim=8",
            "model.stylegan.mapping_layers=2",
            "train.progressive.enabled=true",
        ],
    )


@pytest.fixture(scope="module")
def sg1():
    """A StyleGAN fading into 16 px (of 32), noise on, w_avg moved: what a mid-growth checkpoint holds."""
    torch.manual_seed(0)
    G, _ = build_models(tiny_sg1_config().model)
    G.train()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.normal_()
        for _ in range(3):
            G.mapping(torch.randn(64, 8))
    G.set_stage(16, 0.5)
    return G.eval()


@pytest.fixture(scope="module")
def demod():
    torch.manual_seed(0)
    G, _ = build_models(ModelConfig(arch="dcgan-demod", ngf=8, latent_dim=8, mapping_layers=2))
    return G.eval()


def test_seeds_give_fixed_latents():
    a, b = style.z_from_seeds([3, 5], 8), style.z_from_seeds([5], 8)
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])


@pytest.mark.parametrize("which", ["sg2", "sg1", "demod"])
def test_truncation_psi_zero_gives_the_average_image_for_every_seed(which, request):
    G = request.getfixturevalue(which)
    imgs = style.images_from_seeds(G, [0, 1, 2], psi=0.0)
    avg = style.synthesize(G, style.w_average(G).expand(1, -1))
    assert torch.allclose(imgs, avg.expand_as(imgs), atol=1e-5)
    assert not torch.allclose(style.images_from_seeds(G, [0, 1], psi=1.0)[0], avg[0], atol=1e-3)


def test_layer_ranges_follow_resolutions(sg2):
    assert style.ws_resolutions(sg2) == [4, 8, 8, 16, 16, 32, 32, 32]
    assert style.layer_range(sg2, "coarse") == [0, 1, 2]
    assert style.layer_range(sg2, "middle") == [3, 4, 5, 6, 7]
    assert style.layer_range(sg2, "fine") == []
    with pytest.raises(ValueError, match="coarse"):
        style.layer_range(sg2, "medium")


def test_mixing_grid_rows_columns_and_extremes(sg2):
    rz, cz = style.z_from_seeds([1, 2], 8), style.z_from_seeds([3, 4, 5], 8)
    grid = style.mixing_grid(sg2, rz, cz, layers=list(range(sg2.num_ws)))
    assert grid.shape == (3 * 4, 1, 32, 32)
    # mixing every layer reproduces the column image; the header row shows the columns
    assert torch.allclose(grid[5], grid[1], atol=1e-5) and torch.allclose(grid[11], grid[3], atol=1e-5)
    none = style.mixing_grid(sg2, rz, cz, layers=[])
    assert torch.allclose(none[5], none[4], atol=1e-5)  # no layers mixed: the row image


def test_mix_k_blend_and_interpolation_endpoints(sg2):
    z = [style.z_from_seeds([s], 8) for s in (1, 2, 3)]
    single = style.synthesize(sg2, style.styles(sg2, z[0]))
    assert torch.allclose(style.mix_k(sg2, z, [[], []]), single, atol=1e-5)
    three = style.mix_k(sg2, z, [style.layer_range(sg2, "coarse"), [7]])
    assert three.shape == single.shape and not torch.allclose(three, single, atol=1e-4)
    assert torch.allclose(style.blend(sg2, z[0], z[1], 1.0), single, atol=1e-5)
    for space in ("z", "w"):
        frames = style.interpolate(sg2, z[0], z[1], 4, space=space)
        assert frames.shape == (4, 1, 1, 32, 32)
        assert torch.allclose(frames[0], single, atol=1e-4)
        assert torch.allclose(frames[-1], style.synthesize(sg2, style.styles(sg2, z[1])), atol=1e-4)


def test_activations_filters_and_errors(sg2, demod):
    z = style.z_from_seeds([0, 1], 8)
    assert style.activations(sg2, z, 1).shape == (2, 16, 8, 8)
    assert style.activations(demod, z, 0).shape[0] == 2
    f = style.first_layer_filters(sg2)
    assert f.dim() == 4 and f.shape[1] == 1
    assert style.to_unit(f).abs().max() <= 1.0
    with pytest.raises(ValueError, match="out of range"):
        style.activations(sg2, z, 9)
    plain, _ = build_models(ModelConfig(arch="dcgan", ngf=8, latent_dim=8))
    with pytest.raises(ValueError, match="no mapping network"):
        style.images_from_seeds(plain, [0])


def test_stylegan_ranges_truncation_defaults_and_stage(sg1):
    assert style.ws_resolutions(sg1) == [4, 4, 8, 8, 16, 16, 32, 32]
    assert style.layer_range(sg1, "coarse") == [0, 1, 2, 3]
    assert style.layer_range(sg1, "middle") == [4, 5]  # the 32 px styles are not in use at 16 px
    assert style.layer_range(sg1, "fine") == []
    assert style.truncation(sg1) == (0.7, 8) and style.truncation(sg1, 0.5, 2) == (0.5, 2)
    for bad in ((float("nan"), None), (0.5, 9), (0.5, 0)):
        with pytest.raises(ValueError, match="psi|cutoff"):
            style.truncation(sg1, *bad)
    imgs = style.images_from_seeds(sg1, [0, 1], *style.truncation(sg1))
    assert imgs.shape == (2, 1, 16, 16)  # the stage's size
    # The cutoff matters: styles 0-7 pulled to w_avg differ from styles 0-1 only.
    assert not torch.allclose(imgs, style.images_from_seeds(sg1, [0, 1], 0.7, 2), atol=1e-4)
    assert style.activations(sg1, style.z_from_seeds([0], 8), 2).shape == (1, 8, 16, 16)
    with pytest.raises(ValueError, match="not in use: this generator is at 16 px"):
        style.activations(sg1, style.z_from_seeds([0], 8), 3)
    sg1.set_stage(8, 1.0)
    try:
        assert style.layer_range(sg1, "middle") == [] and style.layer_range(sg1, "middle", in_use=False)
        with pytest.raises(ValueError, match="'middle' .* not in use"):
            style.check_range_in_use(sg1, "middle")
    finally:
        sg1.set_stage(16, 0.5)


# ---------------------------------------------------------------- generate modes


@pytest.fixture(scope="module")
def sg2_checkpoint(tmp_path_factory, sg2):
    from ganray import checkpoint as ckpt
    from ganray.storage import Storage

    cfg = tiny_sg2_config()
    _, D = build_models(cfg.model)
    state = {"epoch": 1, "config": cfg.to_dict(), "G": sg2.state_dict(), "D": D.state_dict()}
    return ckpt.save_checkpoint(Storage(), str(tmp_path_factory.mktemp("run")), state, {})


@pytest.fixture(scope="module")
def sg1_checkpoint(tmp_path_factory, sg1):
    """A stylegan checkpoint fading into 16 px: generate must work at that stage."""
    from ganray import checkpoint as ckpt
    from ganray.storage import Storage

    cfg = tiny_sg1_config()
    _, D = build_models(cfg.model)
    extra = {"images": 100, "phase": 2, "resolution": 16, "alpha": 0.5}
    state = {"epoch": 1, "config": cfg.to_dict(), "G": sg1.state_dict(), "D": D.state_dict(), "extra": extra}
    return ckpt.save_checkpoint(Storage(), str(tmp_path_factory.mktemp("run")), state, {})


STYLE_MODE_CASES = [
    ("truncation", ["--seeds", "0-3", "--psi", "0.5", "--cutoff", "4"], "t.png"),
    ("truncation", ["--seeds", "0-3"], "t.png"),  # the model's default psi / cutoff
    ("mixing", ["--seeds", "1-2", "--cols", "3-5", "--layers", "middle"], "m.png"),
    ("mixing", ["--seeds", "1-2", "--cols", "3-5", "--layers", "coarse"], "m.png"),
    ("mixing-k", ["--seeds", "1,2,3", "--layers", "0-2;5"], "k.png"),
    ("blend", ["--seeds", "1,2", "--frames", "3"], "b.png"),
    ("interpolate", ["--seeds", "1,2", "--frames", "3", "--space", "z"], "walk.gif"),
    ("activations", ["--seeds", "0", "--block", "1"], "a.png"),
    ("filters", [], "f.png"),
]


@pytest.mark.parametrize("mode, args, out", STYLE_MODE_CASES)
def test_generate_style_modes_work_on_a_stylegan_at_its_stage(sg1_checkpoint, tmp_path, mode, args, out):
    from PIL import Image

    from ganray.generate import main

    dest = tmp_path / out
    assert main(["--checkpoint", sg1_checkpoint, "--mode", mode, *args, "--out", str(dest)]) == 0
    img = Image.open(dest)
    if mode == "mixing":  # 16 px tiles (the checkpoint's stage) and 2 px padding
        assert img.size == (4 * 18 + 2, 3 * 18 + 2)
    if mode == "interpolate":
        assert img.n_frames == 3 and len(list((tmp_path / "walk_frames").iterdir())) == 3


def test_generate_stylegan_errors_name_the_stage(sg1_checkpoint, tmp_path, capsys):
    from ganray.generate import main

    ck = ["--checkpoint", sg1_checkpoint, "--out", str(tmp_path / "x.png")]
    assert main([*ck, "--mode", "activations", "--block", "3"]) == 1
    assert "16 px" in capsys.readouterr().err
    assert main([*ck, "--mode", "truncation", "--cutoff", "12"]) == 1
    assert "cutoff 12" in capsys.readouterr().err


@pytest.mark.parametrize(
    "mode, args, out",
    [
        ("truncation", ["--seeds", "0-3", "--psi", "0.5", "--cutoff", "4"], "t.png"),
        ("mixing", ["--seeds", "1-2", "--cols", "3-5", "--layers", "middle"], "m.png"),
        ("mixing-k", ["--seeds", "1,2,3", "--layers", "0-2;5"], "k.png"),
        ("blend", ["--seeds", "1,2", "--frames", "3"], "b.png"),
        ("interpolate", ["--seeds", "1,2", "--frames", "3", "--space", "z"], "walk.gif"),
        ("activations", ["--seeds", "0", "--block", "1"], "a.png"),
        ("filters", [], "f.png"),
    ],
)
def test_generate_style_modes_write_their_outputs(sg2_checkpoint, tmp_path, mode, args, out):
    from PIL import Image

    from ganray.generate import main

    dest = tmp_path / out
    assert main(["--checkpoint", sg2_checkpoint, "--mode", mode, *args, "--out", str(dest)]) == 0
    img = Image.open(dest)
    assert img.size[0] >= 32
    if mode == "mixing":  # 2 rows + header, 3 columns + header: 32 px tiles and 2 px padding
        assert img.size == (4 * 34 + 2, 3 * 34 + 2)
    if mode == "interpolate":
        assert img.n_frames == 3 and len(list((tmp_path / "walk_frames").iterdir())) == 3


def test_generate_style_mode_errors_are_one_line(sg2_checkpoint, tmp_path, capsys):
    from ganray.generate import main

    ck = ["--checkpoint", sg2_checkpoint]
    assert main([*ck, "--mode", "mixing", "--layers", "0-99", "--out", str(tmp_path / "x.png")]) == 1
    assert "num_ws" in capsys.readouterr().err
    assert main([*ck, "--mode", "interpolate", "--seeds", "1,2", "--out", str(tmp_path / "x.png")]) == 1
    assert ".gif" in capsys.readouterr().err
