"""Images scored against a dataset's reference take that dataset's own geometry.

Real Fashion-MNIST test images saved as PNGs at their native 28 px and padded
to the 32 px canvas must both score near 0 against the train split's
reference (the old resize-to-32 path scored the 28 px folder ~26 points
higher); a size that is not on the dataset's path is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganray.config import DataConfig
from ganray.data import DataError
from ganray.data.fashion import DEFAULT_DIR, parse_idx
from ganray.data.geometry import Origin, conform, path_sides
from ganray.metrics.cli import main

# 500 real test images vs 500 real train images: the sampling bias of FID with the
# 128-d offline features is ~3.8 at this size (measured; ~0.5 at 2,000), while the
# resize bug scored the 28 px folder ~30. FID_NEAR_ZERO sits at twice the bias and
# far below the bug.
N_IMAGES = 500
FID_NEAR_ZERO = 8.0


def fashion_test_images(n: int) -> np.ndarray:
    """The first ``n`` Fashion-MNIST test images, uint8 [n, 28, 28]."""
    return parse_idx(Path(DEFAULT_DIR, "t10k-images-idx3-ubyte.gz").read_bytes(), "t10k")[:n]


def write_pngs(folder: Path, images: np.ndarray, pad: int = 0) -> Path:
    folder.mkdir(parents=True)
    for i, a in enumerate(images):
        Image.fromarray(np.pad(a, pad)).save(folder / f"{i:05d}.png")
    return folder


def score_folder(folder: Path, cache: Path, capsys, *extra: str) -> dict:  # noqa: ANN001
    argv = ["fid", "--images", str(folder), "--dataset", "fashion-mnist"]
    argv += ["--num-samples", str(N_IMAGES), "--cache", str(cache), "--backbone", "fashion-mnist-classifier"]
    assert main([*argv, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_real_test_images_at_28_and_32_px_both_score_near_zero(tmp_path, capsys) -> None:  # noqa: ANN001
    images = fashion_test_images(N_IMAGES)
    native = score_folder(write_pngs(tmp_path / "28", images), tmp_path / "cache", capsys)
    padded = score_folder(write_pngs(tmp_path / "32", images, pad=2), tmp_path / "cache", capsys)
    assert native["fid_num_samples"] == padded["fid_num_samples"] == N_IMAGES
    assert native["fid"] < FID_NEAR_ZERO, native
    # Padding 28 -> 32 is what the dataset does, so both folders become the same pixels.
    assert native["fid"] == pytest.approx(padded["fid"], abs=1e-6)


def test_a_size_off_the_datasets_path_is_an_error_not_a_resize(tmp_path, capsys) -> None:  # noqa: ANN001
    folder = write_pngs(tmp_path / "30", fashion_test_images(4), pad=1)  # 30 px: neither 28 nor 32
    argv = ["fid", "--images", str(folder), "--dataset", "fashion-mnist", "--cache", str(tmp_path / "c")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "30x30 px" in err and "28 px -> 32 px" in err and "00000.png" in err


def test_paths_per_origin() -> None:
    assert path_sides(Origin("fashion-mnist"), 32) == [28, 32]
    assert path_sides(Origin("fashion-mnist"), 64) == [28, 32, 64]
    assert path_sides(Origin("fashion-mnist", prepared_side=64), 32) == [28, 32, 64, 32]
    assert path_sides(Origin("cifar10"), 64) == [32, 64]
    assert path_sides(Origin("image-folder", prepared_side=128), 64) == [128, 64]


def test_conform_pads_native_fashion_images_and_keeps_training_sized_ones() -> None:
    a = fashion_test_images(1)[0]
    cfg = DataConfig(resolution=32)
    out = conform(Image.fromarray(a), cfg, Origin("fashion-mnist"))
    np.testing.assert_array_equal(out[0], np.pad(a, 2))  # padded with background, not resized
    same = conform(Image.fromarray(np.pad(a, 2)), cfg, Origin("fashion-mnist"))
    np.testing.assert_array_equal(same, out)
    rgb = conform(Image.fromarray(a), DataConfig(resolution=32, channels=3), Origin("fashion-mnist"))
    assert rgb.shape == (3, 32, 32) and (rgb == out).all()
    with pytest.raises(DataError, match="28x27 px"):
        conform(Image.fromarray(a[1:]), cfg, Origin("fashion-mnist"))


def test_conform_crops_and_resizes_any_image_folder_picture() -> None:
    photo = Image.fromarray(np.full((90, 120, 3), 200, np.uint8))  # not square, any size
    out = conform(photo, DataConfig(source="image-folder", resolution=32, channels=3), Origin("image-folder"))
    assert out.shape == (3, 32, 32) and (out == 200).all()


def test_too_few_or_undecodable_images_are_one_line_errors(tmp_path, capsys) -> None:  # noqa: ANN001
    one = write_pngs(tmp_path / "one", fashion_test_images(1))
    base = ["fid", "--dataset", "fashion-mnist", "--cache", str(tmp_path / "c")]
    assert main([*base, "--images", str(one)]) == 2
    assert "FID needs at least 2" in capsys.readouterr().err
    broken = write_pngs(tmp_path / "broken", fashion_test_images(3))
    (broken / "zz.png").write_bytes(b"not a png")
    assert main([*base, "--images", str(broken)]) == 2
    assert "zz.png is not a readable image" in capsys.readouterr().err
