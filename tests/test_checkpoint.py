"""Checkpoints: round trip, safe loading, format migration, fallback past corruption, best, prune,
compatibility."""

import hashlib
import io
import json
import logging
import os
import random

import numpy as np
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
    # Loadable by plain weights_only=True, with no allowlist at all.
    assert torch.load(io.BytesIO(s.read_bytes(uri)), weights_only=True)["epoch"] == 1


class _RunsCode:
    """Unpickling this calls exec(): what a crafted checkpoint in a shared bucket would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def write_unsafe_checkpoint(storage, run, marker, epoch=1):
    """A checkpoint whose unpickling runs code, with a matching sha256 sidecar (which proves nothing)."""
    buf = io.BytesIO()
    torch.save({"format_version": ckpt.FORMAT_VERSION, "epoch": epoch, "G": _RunsCode(marker)}, buf)
    uri = ckpt.checkpoint_uri(run, epoch)
    storage.write_bytes(uri, buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    storage.write_text(uri[:-3] + ".json", json.dumps({"epoch": epoch, "sha256": sha, "metrics": {}}))
    return uri, sha


def test_a_checkpoint_that_would_run_code_is_refused(run, tmp_path):
    s, marker = Storage(), str(tmp_path / "pwned")
    uri, sha = write_unsafe_checkpoint(s, run, marker)
    with pytest.raises(ckpt.CheckpointError, match=r"refused: .*objects other than tensors.*could run code"):
        ckpt.load_checkpoint(s, uri, sha)
    assert not os.path.exists(marker)


def test_saving_refuses_values_that_would_not_load_safely(run):
    s = Storage()
    with pytest.raises(ckpt.CheckpointError, match=r"checkpoint.extra.aug holds a builtins.object"):
        ckpt.save_checkpoint(s, run, {**_state(1), "extra": {"aug": object()}}, {})
    uri = ckpt.save_checkpoint(s, run, {**_state(1), "extra": {"p": np.float64(0.25), "k": np.arange(3)}}, {})
    extra = torch.load(io.BytesIO(s.read_bytes(uri)), weights_only=True)["extra"]
    assert extra["p"] == 0.25 and type(extra["p"]) is float and torch.equal(extra["k"], torch.arange(3))


def test_numpy_and_python_rng_states_round_trip_as_plain_values():
    np.random.seed(5)
    random.seed(5)
    np_plain = ckpt.numpy_rng_to_plain(np.random.get_state())
    py_plain = ckpt.python_rng_to_plain(random.getstate())
    want = (np.random.rand(3), random.random())
    np.random.seed(6)
    random.seed(6)
    np.random.set_state(ckpt.numpy_rng_from_plain(np_plain))
    random.setstate(ckpt.python_rng_from_plain(py_plain))
    assert np.array_equal(np.random.rand(3), want[0]) and random.random() == want[1]


def v1_bytes(state):
    """What ganray 0.1 (checkpoint format 1) wrote: numpy/python RNG states as numpy/tuple objects."""
    rng = state["rng"]
    old_rng = {
        "torch": rng["torch"],
        "noise": rng["noise"],
        "numpy": ckpt.numpy_rng_from_plain(rng["numpy"]),
        "python": ckpt.python_rng_from_plain(rng["python"]),
    }
    old = {k: v for k, v in state.items() if k not in ("rng", "extra")}
    buf = io.BytesIO()
    torch.save({**old, "rng": old_rng, "extra": state.get("extra", {}), "format_version": 1}, buf)
    return buf.getvalue()


def test_format_1_checkpoints_migrate_and_newer_formats_are_named(run):
    s = Storage()
    np.random.seed(1)
    plain_rng = {
        "torch": torch.get_rng_state(),
        "noise": torch.Generator().get_state(),
        "numpy": ckpt.numpy_rng_to_plain(np.random.get_state()),
        "python": ckpt.python_rng_to_plain(random.getstate()),
    }
    uri = ckpt.checkpoint_uri(run, 1)
    s.write_bytes(uri, v1_bytes({**_state(1), "rng": plain_rng}))
    back = ckpt.load_checkpoint(s, uri)
    assert back["format_version"] == ckpt.FORMAT_VERSION == 2
    assert torch.equal(back["rng"]["numpy"]["keys"], plain_rng["numpy"]["keys"])
    assert back["rng"]["cuda"] == [] and back["extra"] == {}
    buf = io.BytesIO()
    torch.save({**_state(1), "format_version": 99, "ganray_version": "9.0"}, buf)
    s.write_bytes(uri, buf.getvalue())
    with pytest.raises(ckpt.CheckpointError, match=r"format 99, written by ganray 9.0.*upgrade ganray"):
        ckpt.load_checkpoint(s, uri)


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


def test_every_checkpoint_corrupt_is_refused_and_nothing_is_touched(run):
    s = Storage()
    for epoch in (1, 2):
        uri = ckpt.save_checkpoint(s, run, _state(epoch), {})
        s.write_bytes(uri, s.read_bytes(uri)[:-10] + b"x" * 10)
    before = {n: s.read_bytes(join(run, "checkpoints", n)) for n in s.listdir(join(run, "checkpoints"))}
    with pytest.raises(ckpt.CheckpointError, match=r"2 checkpoint\(s\) and none can be loaded.*--restart"):
        ckpt.load_latest(s, run)
    assert {n: s.read_bytes(join(run, "checkpoints", n)) for n in before} == before
    # Unreadable sidecars count too: they claim checkpoints that cannot be verified.
    for n, text in zip(sorted(n for n in before if n.endswith(".json")), ["{not json", '{"epoch": 2}']):
        s.write_text(join(run, "checkpoints", n), text)
    with pytest.raises(ckpt.CheckpointError, match="none can be loaded.*sidecars"):
        ckpt.load_latest(s, run)
    assert ckpt.load_latest(s, join(run, "fresh")) is None


def test_truncated_checkpoint_is_a_clear_error(run):
    s = Storage()
    uri = ckpt.save_checkpoint(s, run, _state(1), {})
    s.write_bytes(uri, s.read_bytes(uri)[:100])
    with pytest.raises(ckpt.CheckpointError, match="cannot be read"):
        ckpt.load_checkpoint(s, uri)
    s.write_bytes(uri, bytes(range(256)) * 8)  # not a torch file at all: damaged, not "unsafe"
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


def test_a_field_the_saved_config_lacks_counts_as_its_default():
    from ganray.config import Config

    model = Config().to_dict()["model"]
    older = {"config": {"model": {k: v for k, v in model.items() if k != "batchnorm_g"}}}
    ckpt.check_compatible(older, model)  # an older release without the field: compatible
    with pytest.raises(ckpt.CheckpointError, match=r"model.batchnorm_g: checkpoint True vs config False"):
        ckpt.check_compatible(older, {**model, "batchnorm_g": False})
