"""Checkpoints: round trip, latest with fallback past corruption, best, prune, compatibility."""

import logging

import pytest
import torch

from ganray import checkpoint as ckpt
from ganray.storage import Storage, join


def _state(epoch, w=1.0):
    return {"epoch": epoch, "G": {"w": torch.full((3,), w)}, "config": {"model": {"arch": "dcgan", "ngf": 8}}}


@pytest.fixture
def run(tmp_path):
    return str(tmp_path / "run")


def test_round_trip(run):
    s = Storage()
    uri = ckpt.save_checkpoint(s, run, _state(1, 2.0), {"fid": 10.0})
    info = ckpt.list_checkpoints(s, run)[0]
    assert info.uri == uri and info.epoch == 1 and info.metrics == {"fid": 10.0}
    back = ckpt.load_checkpoint(s, uri, info.sha256)
    assert torch.equal(back["G"]["w"], torch.full((3,), 2.0))
    assert back["format_version"] == ckpt.FORMAT_VERSION and "ganray_version" in back


def test_latest_falls_back_past_a_corrupt_checkpoint(run, caplog):
    s = Storage()
    ckpt.save_checkpoint(s, run, _state(1), {})
    uri2 = ckpt.save_checkpoint(s, run, _state(2), {})
    data = bytearray(s.read_bytes(uri2))
    data[len(data) // 2] ^= 0xFF
    s.write_bytes(uri2, bytes(data))
    with caplog.at_level(logging.WARNING, logger="ganray"):
        latest = ckpt.load_latest(s, run)
    assert latest["epoch"] == 1
    assert "corrupt" in caplog.text and "falling back" in caplog.text


def test_truncated_checkpoint_is_a_clear_error(run):
    s = Storage()
    uri = ckpt.save_checkpoint(s, run, _state(1), {})
    s.write_bytes(uri, s.read_bytes(uri)[:100])
    with pytest.raises(ckpt.CheckpointError, match="cannot be read"):
        ckpt.load_checkpoint(s, uri)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(s, join(run, "checkpoints", "epoch_0009.pt"))


def test_checkpoint_without_sidecar_is_invisible(run):
    s = Storage()
    ckpt.save_checkpoint(s, run, _state(1), {})
    uri2 = ckpt.save_checkpoint(s, run, _state(2), {})
    s.remove(uri2[:-3] + ".json")  # a crash between checkpoint and sidecar
    assert [c.epoch for c in ckpt.list_checkpoints(s, run)] == [1]


def test_best_and_prune_keep_the_best(run):
    s = Storage()
    for epoch, fid in [(1, 50.0), (2, 20.0), (3, 30.0), (4, float("nan")), (5, 40.0)]:
        ckpt.save_checkpoint(s, run, _state(epoch), {"fid": fid})
    assert ckpt.best_checkpoint(s, run).epoch == 2
    ckpt.prune_checkpoints(s, run, keep=2)
    assert [c.epoch for c in ckpt.list_checkpoints(s, run)] == [2, 4, 5]
    assert ckpt.best_checkpoint(s, run, "missing") is None


def test_architecture_mismatch_is_named():
    state = _state(1)
    ckpt.check_compatible(state, {"arch": "dcgan", "ngf": 8})
    with pytest.raises(ckpt.CheckpointError, match=r"model.ngf: checkpoint 8 vs config 64"):
        ckpt.check_compatible(state, {"arch": "dcgan", "ngf": 64})
