"""Sample grids: ganray's own tiling matches torchvision's make_grid pixel for pixel."""

import io

import pytest
import torch
from PIL import Image

from ganray.train.artifacts import images_to_png, tile


@pytest.mark.parametrize(("n", "channels", "nrow"), [(16, 1, None), (10, 3, 4), (3, 1, 8)])
def test_tile_matches_torchvision_make_grid(n, channels, nrow):
    from torchvision.utils import make_grid

    images = torch.rand(n, channels, 6, 5, generator=torch.Generator().manual_seed(n)) * 2.4 - 1.2
    ref = make_grid(images.clamp(-1, 1), nrow=nrow or 4, padding=2, normalize=True, value_range=(-1, 1))
    ref = ref.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # make_grid makes 1 channel into 3
    got = tile(images, nrow)
    assert got.shape[:2] == ref.shape[:2] and got.shape[2] == channels
    assert (got == ref[:, :, :channels]).all()


def test_png_is_grayscale_for_one_channel_and_rgb_for_three():
    with Image.open(io.BytesIO(images_to_png(torch.zeros(4, 1, 8, 8)))) as im:
        assert (im.mode, im.size) == ("L", (2 * 10 + 2, 2 * 10 + 2))
    with Image.open(io.BytesIO(images_to_png(torch.zeros(9, 3, 8, 8)))) as im:
        assert (im.mode, im.size) == ("RGB", (3 * 10 + 2, 3 * 10 + 2))
