"""ganray.train.tensorboard: the per-epoch grid event files that rank 0 writes."""

from __future__ import annotations

import struct

import torch

from ganray.storage import Storage
from ganray.train import artifacts, tensorboard


def test_epoch_grid_is_written_as_a_png_and_as_a_tensorboard_image(tmp_path):
    s = Storage()
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    artifacts.save_epoch_grid(s, str(tmp_path), 3, images)
    png = (tmp_path / "samples" / "epoch_0003.png").read_bytes()
    assert png == artifacts.images_to_png(images)
    data = (tmp_path / "tensorboard" / "events.out.tfevents.0000000003.ganray").read_bytes()
    assert tensorboard.read_images(data) == [(3, tensorboard.GRID_TAG, png)]


def test_event_records_carry_valid_checksums():
    from tensorboardX.record_writer import masked_crc32c

    data = tensorboard.grid_event_file(b"png", 2, 3, 1, step=5, wall_time=1.0)
    pos, n_records = 0, 0
    while pos < len(data):
        header = data[pos : pos + 8]
        (n,) = struct.unpack("Q", header)
        assert struct.unpack("I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header)
        body = data[pos + 12 : pos + 12 + n]
        assert struct.unpack("I", data[pos + 12 + n : pos + 16 + n])[0] == masked_crc32c(body)
        pos, n_records = pos + 16 + n, n_records + 1
    assert n_records == 2  # the file-version header, then the image
