"""ganray.data: real Fashion-MNIST, prepare/read round trips, corruption, layouts, cache."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganray.config import DataConfig
from ganray.data import DataError, ImageDataset, build_dataset, prepare, train_val_split
from ganray.data.cli import main
from ganray.data.fashion import DEFAULT_DIR
from ganray.data.transforms import convert_channels, resize
from ganray.storage import Storage

# No skip when Fashion-MNIST is missing: tests/conftest.py fails every test with the fix.
SMALL = 300  # images in the prepare round trips: 3 shards of <= 128


def _quiet(_: str) -> None:
    """A ``log`` for prepare() that keeps test output clean."""


@pytest.fixture(scope="module")
def fm_train() -> ImageDataset:
    """The full train split (decode speed is measured in benchmarks, not asserted here)."""
    return build_dataset(DataConfig())


@pytest.fixture
def memory_uri():
    """A fresh memory:// folder, removed afterwards (the memory filesystem is process-global)."""
    uri = f"memory://ganray-test-{uuid.uuid4().hex}"
    yield uri
    Storage().remove(uri, recursive=True)


def _raw_idx(name: str) -> np.ndarray:
    """Decode an IDX file independently of ganray: 16-byte header, then pixels."""
    data = gzip.decompress(Path(DEFAULT_DIR, name).read_bytes())
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 28, 28)


# ---------------------------------------------------------------- fashion-mnist


def test_fashion_mnist_splits_shapes_range_and_labels(fm_train):
    train = fm_train
    test = build_dataset(DataConfig(), "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images_uint8.shape == (60000, 1, 32, 32) and train.images_uint8.dtype == torch.uint8
    assert (train.resolution, train.channels) == (32, 1)
    assert sorted(train.labels.unique().tolist()) == list(range(10))
    assert sorted(test.labels.unique().tolist()) == list(range(10))
    x, y = train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 32, 32) and isinstance(y, int)
    batch = train.batch(range(512))
    assert batch.min().item() == -1.0 and batch.max().item() == 1.0
    assert torch.equal(batch[0], x)


def test_fashion_padding_keeps_content(fm_train):
    train = fm_train
    raw = _raw_idx("train-images-idx3-ubyte.gz")
    assert np.array_equal(train.images_uint8[:, 0, 2:30, 2:30].numpy(), raw)
    img = train.images_uint8
    frame = [img[..., :2, :], img[..., 30:, :], img[..., :2], img[..., 30:]]
    assert all(part.max().item() == 0 for part in frame)  # the 2 px frame is background (-> -1.0)


def test_subset_takes_the_first_images_of_train_only(fm_train):
    train = fm_train
    sub = build_dataset(DataConfig(subset=100))
    assert torch.equal(sub.images_uint8, train.images_uint8[:100])
    assert torch.equal(sub.labels, train.labels[:100])
    assert len(build_dataset(DataConfig(subset=100), "test")) == 10000
    assert sub.dataset_id != train.dataset_id


def test_channels_1_to_3_and_resize_to_64(fm_train):
    train = fm_train
    rgb = build_dataset(DataConfig(subset=50, channels=3))
    assert rgb.images_uint8.shape == (50, 3, 32, 32)
    for c in range(3):
        assert torch.equal(rgb.images_uint8[:, c], train.images_uint8[:50, 0])
    big = build_dataset(DataConfig(subset=50, resolution=64))
    assert big.images_uint8.shape == (50, 1, 64, 64)
    # 64 px is the 32 px canvas resized, so the frame stays background.
    assert big.images_uint8[:, :, :2].sum().item() == 0
    assert torch.equal(big.images_uint8, torch.from_numpy(resize(train.images_uint8[:50].numpy(), 64)))
    assert len({train.dataset_id, rgb.dataset_id, big.dataset_id}) == 3


def test_rgb_to_grey_matches_pil_luma():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    grey = convert_channels(rgb, 1)
    pil = np.stack([np.asarray(Image.fromarray(img.transpose(1, 2, 0)).convert("L")) for img in rgb])
    assert grey.shape == (4, 1, 8, 8)
    assert np.abs(grey[:, 0].astype(int) - pil).max() <= 1


def test_dataset_id_is_stable():
    a, b = build_dataset(DataConfig(subset=20)), build_dataset(DataConfig(subset=20))
    assert a.dataset_id == b.dataset_id
    assert "fashion-mnist" in a.dataset_id and "train" in a.dataset_id


# ---------------------------------------------------------------- prepare / parquet


@pytest.fixture(params=["local", "memory"])
def dest(request, tmp_path, memory_uri) -> str:
    return str(tmp_path / "prepared") if request.param == "local" else f"{memory_uri}/prepared"


def test_prepare_round_trip_is_lossless(dest, fm_train, tmp_path):
    train = fm_train
    manifest = prepare(
        "fashion-mnist", dest, 32, limit=SMALL, shard_size=128, cache_dir=str(tmp_path), log=_quiet
    )
    assert manifest["count"] == SMALL and [s["count"] for s in manifest["shards"]] == [128, 128, 44]
    stored = json.loads(Storage().read_text(f"{dest}/manifest.json"))
    assert stored["shards"] == manifest["shards"] and stored["source"] == "fashion-mnist"
    ds = build_dataset(DataConfig(source="parquet", uri=dest, cache_dir=str(tmp_path)))
    assert torch.equal(ds.images_uint8, train.images_uint8[:SMALL])
    assert torch.equal(ds.labels, train.labels[:SMALL])
    assert ds.dataset_id.startswith("parquet.train.")


@pytest.fixture
def prepared(tmp_path) -> str:
    out = str(tmp_path / "prepared")
    prepare("fashion-mnist", out, 32, limit=SMALL, shard_size=128, log=_quiet)
    return out


def _read(uri: str) -> ImageDataset:
    return build_dataset(DataConfig(source="parquet", uri=uri))


def test_corrupt_shard_is_rejected(prepared):
    path = Path(prepared, "shard-00001.parquet")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"shard-00001\.parquet.*corrupt.*python -m ganray.data prepare"):
        _read(prepared)


def test_truncated_shard_is_rejected(prepared):
    path = Path(prepared, "shard-00002.parquet")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"shard-00002\.parquet"):
        _read(prepared)


def test_missing_shard_is_rejected(prepared):
    Path(prepared, "shard-00000.parquet").unlink()
    with pytest.raises(DataError, match=r"shard-00000\.parquet.*missing"):
        _read(prepared)


def test_missing_or_malformed_manifest_is_rejected(prepared):
    manifest = Path(prepared, "manifest.json")
    manifest.write_text('{"format_version": 1, "shards": "nope"}')
    with pytest.raises(DataError, match="malformed"):
        _read(prepared)
    manifest.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        _read(prepared)
    manifest.unlink()
    with pytest.raises(DataError, match=r"manifest\.json is missing.*prepare"):
        _read(prepared)


def test_parquet_split_mismatch_names_the_fix(prepared):
    with pytest.raises(DataError, match="holds split 'train'"):
        build_dataset(DataConfig(source="parquet", uri=prepared), "test")


def test_cli_prepare(tmp_path):
    dest = tmp_path / "cli"
    cmd = [
        sys.executable,
        "-m",
        "ganray.data",
        "prepare",
        "fashion-mnist",
        str(dest),
        "--resolution",
        "32",
        "--limit",
        "200",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "shard-00000.parquet" in done.stdout
    assert json.loads((dest / "manifest.json").read_text())["count"] == 200


def test_cli_reports_data_errors_without_a_traceback(tmp_path, capsys):
    assert main(["prepare", "cifar10", str(tmp_path / "x"), "--resolution", "32"]) == 2
    assert "error: cifar10: data.uri is empty" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- remote cache


def test_remote_raw_source_is_downloaded_once(memory_uri, tmp_path):
    storage = Storage()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        storage.write_bytes(f"{memory_uri}/fm/{name}", Path(DEFAULT_DIR, name).read_bytes())
    cfg = DataConfig(uri=f"{memory_uri}/fm", cache_dir=str(tmp_path / "cache"))
    first = build_dataset(cfg, "test")
    cached = list((tmp_path / "cache" / "data").glob("*/t10k-images-idx3-ubyte.gz"))
    assert len(cached) == 1
    storage.remove(f"{memory_uri}/fm", recursive=True)  # a second download would now fail
    second = build_dataset(cfg, "test")
    assert torch.equal(first.images_uint8, second.images_uint8)
    assert first.dataset_id == build_dataset(DataConfig(), "test").dataset_id  # same content, same id


def test_remote_parquet_shards_are_cached(memory_uri, tmp_path):
    storage, dest = Storage(), f"{memory_uri}/shards"
    prepare("fashion-mnist", dest, 32, limit=SMALL, shard_size=128, log=_quiet)
    cfg = DataConfig(source="parquet", uri=dest, cache_dir=str(tmp_path / "cache"))
    first = build_dataset(cfg)
    assert len(list((tmp_path / "cache" / "shards").glob("*/shard-*.parquet"))) == 3
    for name in storage.listdir(dest):
        if name.startswith("shard-"):
            storage.remove(f"{dest}/{name}")  # only the manifest is read remotely now
    assert torch.equal(build_dataset(cfg).images_uint8, first.images_uint8)


# ---------------------------------------------------------------- other layouts


def _write_image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, lossless=True)  # lossless: webp defaults to lossy


def test_image_folder_labels_sizes_and_test_split(tmp_path):
    root = tmp_path / "afhq"
    _write_image(root / "cat" / "a.png", (40, 40), (255, 0, 0))
    _write_image(root / "cat" / "deep" / "b.jpg", (64, 48), (0, 255, 0))  # non-square: centre crop
    _write_image(root / "dog" / "c.webp", (20, 20), (0, 0, 255))
    _write_image(root / "test" / "x" / "d.bmp", (16, 16), (10, 20, 30))
    (root / "notes.txt").write_text("not an image")
    ds = build_dataset(DataConfig(source="image-folder", uri=str(root), resolution=16, channels=3))
    assert ds.images_uint8.shape == (3, 3, 16, 16)
    assert ds.labels.tolist() == [0, 0, 1]  # cat, cat, dog; test/ stays out of train
    assert ds.images_uint8[0, :, 8, 8].tolist() == [255, 0, 0]
    assert ds.images_uint8[2, :, 8, 8].tolist() == [0, 0, 255]
    test = build_dataset(DataConfig(source="image-folder", uri=str(root), resolution=16, channels=1), "test")
    assert test.images_uint8.shape == (1, 1, 16, 16) and test.labels.tolist() == [0]
    with pytest.raises(DataError, match="test"):
        build_dataset(DataConfig(source="image-folder", uri=str(root / "cat"), resolution=16), "test")


def _cifar_batch(path: Path, n: int, offset: int) -> np.ndarray:
    data = (np.arange(n * 3072, dtype=np.int64).reshape(n, 3072) + offset) % 256
    entry = {
        "batch_label": "synthetic",
        "labels": [(offset + i) % 10 for i in range(n)],
        "data": data.astype(np.uint8),
    }
    path.write_bytes(pickle.dumps(entry))
    return data.astype(np.uint8)


def test_cifar10_layout(tmp_path):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = [_cifar_batch(folder / f"data_batch_{i}", 4, 7 * i) for i in range(1, 6)]
    test = _cifar_batch(folder / "test_batch", 3, 99)
    cfg = DataConfig(source="cifar10", uri=str(tmp_path / "cifar"), channels=3)
    ds = build_dataset(cfg)
    assert ds.images_uint8.shape == (20, 3, 32, 32)
    assert np.array_equal(ds.images_uint8.numpy().reshape(20, 3072), np.concatenate(train))
    assert ds.labels[:4].tolist() == [7, 8, 9, 0]
    assert len(build_dataset(cfg, "test")) == 3 and np.array_equal(
        build_dataset(cfg, "test").images_uint8.numpy().reshape(3, -1), test
    )
    grey = build_dataset(DataConfig(source="cifar10", uri=str(folder), subset=6))
    assert grey.images_uint8.shape == (6, 1, 32, 32)


def test_cifar10_rejects_pickles_that_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": os.getcwd}))  # references a function
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        build_dataset(DataConfig(source="cifar10", uri=str(folder)))


def test_bad_source_uri_gives_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*not a folder.*apt-get install dataset-fashion-mnist"):
        build_dataset(DataConfig(uri=str(tmp_path / "nowhere")))
    with pytest.raises(
        DataError, match=r"no train IDX files.*apt-get install dataset-fashion-mnist.*data.uri"
    ):
        build_dataset(DataConfig(uri=str(tmp_path)))
    with pytest.raises(DataError, match="data_batch_1 not found.*cifar-10-batches-py"):
        build_dataset(DataConfig(source="cifar10", uri=str(tmp_path)))
    with pytest.raises(DataError, match="no images"):
        build_dataset(DataConfig(source="image-folder", uri=str(tmp_path)))
    with pytest.raises(DataError, match="nosuchproto"):
        build_dataset(DataConfig(uri="nosuchproto://bucket/fm", cache_dir=str(tmp_path)))
    with pytest.raises(DataError, match="out of range"):
        build_dataset(DataConfig(resolution=4))


# ---------------------------------------------------------------- split


def test_train_val_split_is_deterministic_and_disjoint():
    ds = build_dataset(DataConfig(subset=1000))
    train, val = train_val_split(ds, 0.1, seed=3)
    again_train, again_val = train_val_split(ds, 0.1, seed=3)
    assert (len(train), len(val)) == (900, 100)
    assert train.indices == again_train.indices and val.indices == again_val.indices
    assert set(train.indices).isdisjoint(val.indices) and len(set(train.indices) | set(val.indices)) == 1000
    assert train_val_split(ds, 0.1, seed=4)[1].indices != val.indices
    assert torch.equal(val.batch([0, 1]), ds.batch(val.indices[:2]))
    assert torch.equal(val[0][0], ds[val.indices[0]][0]) and val.images_uint8.shape == (100, 1, 32, 32)
    all_train, no_val = train_val_split(ds, 0.0, seed=3)
    assert len(all_train) == 1000 and len(no_val) == 0


def test_missing_default_fashion_mnist_names_the_package(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr("ganray.data.fashion.DEFAULT_DIR", str(tmp_path / "absent"))
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(
        DataError, match=r"download failed \(no network\).*apt-get install dataset-fashion-mnist.*data\.uri"
    ):
        build_dataset(DataConfig(cache_dir=str(tmp_path)))


# ---------------------------------------------------------------- issue 11 items 5, 15


def test_prepare_refuses_a_non_empty_destination(prepared, tmp_path):
    before = sorted(os.listdir(prepared))
    with pytest.raises(DataError, match="is not empty .*pass --overwrite"):
        prepare("fashion-mnist", prepared, 32, limit=10, log=_quiet)
    assert sorted(os.listdir(prepared)) == before
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="has no manifest.json and holds notes.txt; choose an empty folder"):
        prepare("fashion-mnist", str(other), 32, limit=10, log=_quiet, overwrite=True)
    assert os.listdir(other) == ["notes.txt"]


def test_overwrite_replaces_the_dataset_atomically(prepared):
    old = _read(prepared)

    def crash_after_first_shard(msg: str) -> None:
        if msg.startswith("  shard-"):
            raise KeyboardInterrupt  # interrupted mid-replace, after one new shard was written

    with pytest.raises(KeyboardInterrupt):
        prepare(
            "fashion-mnist",
            prepared,
            32,
            limit=100,
            shard_size=50,
            log=crash_after_first_shard,
            overwrite=True,
        )
    assert torch.equal(_read(prepared).images_uint8, old.images_uint8)  # the old dataset is whole
    manifest = prepare("fashion-mnist", prepared, 32, limit=100, shard_size=50, log=_quiet, overwrite=True)
    assert _read(prepared).images_uint8.shape[0] == 100
    names = {s["name"] for s in manifest["shards"]}
    assert sorted(os.listdir(prepared)) == sorted(names | {"manifest.json"})  # no old or orphan shard


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--limit", "-5"], "argument --limit: must be at least 0, got -5"),
        (["--resolution", "33"], "--resolution 33: use a power of two"),
        (["--shard-size", "0"], "argument --shard-size: must be at least 1"),
    ],
)
def test_cli_refuses_bad_sizes_before_writing(tmp_path, capsys, args, fragment):
    argv = ["prepare", "fashion-mnist", str(tmp_path / "x"), "--resolution", "32", *args]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2 and fragment in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
