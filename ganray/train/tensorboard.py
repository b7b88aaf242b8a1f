"""Sample grids as TensorBoard images, written by rank 0 next to the run's other artifacts.

Scalars reach TensorBoard through Ray Tune's own TBXLoggerCallback (in the
experiment's _tune/ folder); the grids are written here because only the
Train worker has them. Each epoch's grid is one small, complete event file
``RUN/tensorboard/events.out.tfevents.EEEEEEEEEE.ganray`` written atomically
through ganray's storage, so it works on S3 too, survives restarts (a resumed
epoch rewrites its own file) and never leaves a torn record.
"""

from __future__ import annotations

import struct
import time

from ganray.storage import Storage, join

TB_DIR = "tensorboard"
GRID_TAG = "samples/grid"


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC32C, the payload, the payload's masked CRC32C."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("Q", len(data))
    return header + struct.pack("I", masked_crc32c(header)) + data + struct.pack("I", masked_crc32c(data))


def grid_event_file(png: bytes, height: int, width: int, channels: int, step: int, wall_time: float) -> bytes:
    """The bytes of an event file holding one image summary (the PNG as is) at ``step``."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    head = Event(wall_time=wall_time, file_version="brain.Event:2")
    ev = Event(
        wall_time=wall_time, step=step, summary=Summary(value=[Summary.Value(tag=GRID_TAG, image=image)])
    )
    return _record(head.SerializeToString()) + _record(ev.SerializeToString())


def event_uri(run_uri: str, epoch: int) -> str:
    return join(run_uri, TB_DIR, f"events.out.tfevents.{epoch:010d}.ganray")


def write_grid(storage: Storage, run_uri: str, epoch: int, png: bytes, shape: tuple[int, int, int]) -> None:
    """Write epoch ``epoch``'s grid (PNG bytes, ``shape`` = (height, width, channels)) for TensorBoard."""
    h, w, c = shape
    storage.write_bytes(event_uri(run_uri, epoch), grid_event_file(png, h, w, c, epoch, time.time()))


def read_events(data: bytes) -> list:
    """Every Event (tensorboardX's protobuf) in an event file's bytes (for tests and tools)."""
    from tensorboardX.proto.event_pb2 import Event

    out, pos = [], 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack("Q", data[pos : pos + 8])
        out.append(Event.FromString(data[pos + 12 : pos + 12 + n]))
        pos += 12 + n + 4
    return out


def read_images(data: bytes) -> list[tuple[int, str, bytes]]:
    """(step, tag, encoded image) of every image summary in an event file's bytes."""
    return [
        (ev.step, v.tag, v.image.encoded_image_string)
        for ev in read_events(data)
        for v in ev.summary.value
        if v.HasField("image")
    ]
