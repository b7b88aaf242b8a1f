"""ganray.generate: grid / folder / .npz outputs, seeds, bounded batches and refused outputs."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from ganray import checkpoint as ckpt
from ganray.config import load_config
from ganray.generate import generate, main
from ganray.image_io import MAX_GRID, OutputError, parse_seeds
from ganray.inference import load_generator, sample_seeds
from ganray.storage import Storage


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An (untrained) tiny DCGAN checkpoint written by the real checkpoint code."""
    from ganray.models import build_models

    run = tmp_path_factory.mktemp("run")
    cfg = load_config("quickstart", ["model.ngf=8", "model.ndf=8"])
    torch.manual_seed(0)
    G, D = build_models(cfg.model)
    state = {"epoch": 1, "config": cfg.to_dict(), "G": G.state_dict(), "D": D.state_dict()}
    return ckpt.save_checkpoint(Storage(), str(run), state, {})


@pytest.mark.parametrize(
    "text, seeds",
    [("0-3", [0, 1, 2, 3]), ("7", [7]), ("1,5,7-9", [1, 5, 7, 8, 9]), (" 2 , 4-5", [2, 4, 5])],
)
def test_seeds_parse_like_nvlabs(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    "text, fragment",
    [("5-1", "runs backwards"), ("a-b", "is not N or A-B"), ("1,1", "a seed repeats"), ("-3", "is not N"),
     ("0-4294967296", "beyond the largest seed"), ("0-99999999999", "beyond the largest seed")],
)  # fmt: skip
def test_bad_seeds_are_refused(text, fragment):
    with pytest.raises(OutputError, match=fragment):
        parse_seeds(text)


def test_an_image_depends_on_its_seed_only(checkpoint):
    G, _, _ = load_generator(checkpoint)
    a = torch.cat(list(sample_seeds(G, [3, 4, 5], batch=2)))
    b = torch.cat(list(sample_seeds(G, [5, 4], batch=1)))
    assert torch.equal(a[2], b[0]) and torch.equal(a[1], b[1])


def test_folder_output_is_one_png_per_seed(checkpoint, tmp_path):
    out = tmp_path / "fakes"
    generate(checkpoint, out=str(out) + "/", seeds=parse_seeds("0-4,10"), batch=2)
    assert sorted(p.name for p in out.iterdir()) == [f"seed{s:04d}.png" for s in (0, 1, 2, 3, 4, 10)]
    with Image.open(out / "seed0010.png") as im:
        assert im.format == "PNG" and im.size == (32, 32) and im.mode == "L"


def test_npz_output_is_uint8_nhwc_written_in_batches(checkpoint, tmp_path):
    out = tmp_path / "fakes.npz"
    generate(checkpoint, out=str(out), seeds=list(range(11)), batch=4)
    arr = np.load(out)["arr_0"]
    assert arr.shape == (11, 32, 32, 1) and arr.dtype == np.uint8
    G, _, _ = load_generator(checkpoint)
    expect = torch.cat(list(sample_seeds(G, [10]))).add(1).mul(127.5).round().to(torch.uint8)
    assert np.array_equal(arr[10, :, :, 0], expect[0, 0].numpy())
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["arr_0.npy"]


def test_grid_is_png_or_real_jpeg(checkpoint, tmp_path):
    for name, fmt in (("g.png", "PNG"), ("g.jpg", "JPEG"), ("g.JPEG", "JPEG")):
        generate(checkpoint, n=9, out=str(tmp_path / name))
        with Image.open(tmp_path / name) as im:
            assert im.format == fmt and im.size == (3 * 34 + 2, 3 * 34 + 2)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--n", str(MAX_GRID + 1), "--out", "g.png"], "a grid holds at most 1024 images"),
        (["--out", "g.gif"], "cannot tell what to write"),
        (["--out", "existing_file"], "cannot tell what to write"),
        (["--out", "full/"], "already holds files"),
        (["--out", "a_folder.png"], "is a folder; give a file name"),
        (["--out", "existing_file/x.png"], "is a file, so nothing can be written below it"),
    ],
)
def test_unusable_outputs_are_one_line_errors(checkpoint, tmp_path, monkeypatch, capsys, args, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing_file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.png").write_text("x")
    (tmp_path / "a_folder.png").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["--checkpoint", checkpoint, *args]) == 1
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--out", "memory://g.png"], "memory:// lives inside one process"),
        (["--out", "s3:/b/g.png"], "did you mean 's3://b/g.png'"),
        (["--n", "0"], "must be between 1 and"),
        (["--seed", "-1"], "must be between 0 and"),
        (["--batch", "0"], "must be between 1 and 4096"),
    ],
)
def test_bad_options_are_usage_errors(checkpoint, capsys, args, fragment):
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", checkpoint, *args])
    assert e.value.code == 2 and fragment in capsys.readouterr().err


def test_a_mid_growth_checkpoint_writes_full_size_images(tmp_path):
    """A stylegan stopped at 8 px: folders/arrays hold model.resolution images (nearest), as its FID saw."""
    from ganray.models import build_models

    cfg = load_config(
        None,
        ["model.arch=stylegan", "model.latent_dim=8", "model.stylegan.network_capacity=1",
         "model.stylegan.fmap_max=8", "model.stylegan.w_dim=8", "model.stylegan.mapping_layers=2",
         "train.progressive.enabled=true"],
    )  # fmt: skip
    torch.manual_seed(0)
    G, D = build_models(cfg.model)
    extra = {"images": 10, "phase": 1, "resolution": 8, "alpha": 1.0}
    state = {"epoch": 1, "config": cfg.to_dict(), "G": G.state_dict(), "D": D.state_dict(), "extra": extra}
    path = ckpt.save_checkpoint(Storage(), str(tmp_path / "run"), state, {})
    out = tmp_path / "fakes.npz"
    assert main(["--checkpoint", path, "--seeds", "0-2", "--out", str(out)]) == 0
    arr = np.load(out)["arr_0"]
    assert arr.shape == (3, 32, 32, 1)
    assert (arr[:, ::4, ::4] == arr[:, 3::4, 3::4]).all()  # 4x4 blocks: nearest upsampling of 8 px
