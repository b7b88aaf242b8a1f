"""Storage, data shards and a training run against a real S3 endpoint (moto's server on loopback)."""

import pytest

from ganray import checkpoint as ckpt
from ganray.config import DataConfig, load_config
from ganray.data import build_dataset, prepare
from ganray.storage import Storage, StorageError, join
from ganray.train import artifacts
from ganray.train.loop import Trainer

pytestmark = pytest.mark.integration


def test_storage_round_trip_on_s3(bucket, s3_endpoint):
    s = Storage(endpoint_url=s3_endpoint)
    root = f"s3://{bucket}/prefix"
    s.write_text(join(root, "a", "x.json"), '{"ok": 1}')
    s.atomic_write(join(root, "a", "y.bin"), lambda fh: fh.write(b"\x00" * 10))
    assert s.listdir(join(root, "a")) == ["x.json", "y.bin"]
    assert s.read_text(join(root, "a", "x.json")) == '{"ok": 1}'
    s.copy(join(root, "a", "x.json"), join(root, "b", "x.json"))
    assert s.exists(join(root, "b", "x.json"))

    def crash(fh):
        fh.write(b"partial")
        raise OSError("killed")

    with pytest.raises(OSError):
        s.atomic_write(join(root, "a", "x.json"), crash)
    assert s.read_text(join(root, "a", "x.json")) == '{"ok": 1}'  # the old object is untouched
    s.check_writable(root)


def test_missing_bucket_is_a_clear_error(bucket, s3_endpoint):
    with pytest.raises(
        StorageError, match="cannot write to storage 's3://no-such-bucket-x/p'.*bucket exists"
    ):
        Storage(endpoint_url=s3_endpoint).check_writable("s3://no-such-bucket-x/p")


def test_prepared_shards_on_s3_read_back_equal(bucket, s3_endpoint, tmp_path):
    s = Storage(endpoint_url=s3_endpoint)
    dest = f"s3://{bucket}/fmnist-32"
    prepare("fashion-mnist", dest, resolution=32, limit=200, storage=s, log=lambda _: None)
    direct = build_dataset(DataConfig(subset=200))
    shards = build_dataset(DataConfig(source="parquet", uri=dest, cache_dir=str(tmp_path)), storage=s)
    assert shards.images_uint8.equal(direct.images_uint8[:200])


def test_training_run_writes_and_resumes_on_s3(bucket, s3_endpoint):
    overrides = [
        f"storage.uri=s3://{bucket}/runs",
        f"storage.endpoint_url={s3_endpoint}",
        "storage.run_name=r",
        "data.subset=600",
        "model.ngf=8",
        "model.ndf=8",
        "train.batch_size=32",
        "train.max_steps_per_epoch=3",
        "metrics.fid=false",
    ]
    Trainer(load_config("quickstart", [*overrides, "train.epochs=1"])).fit()
    resumed = Trainer(load_config("quickstart", [*overrides, "train.epochs=2"]))
    assert resumed.epoch == 1
    resumed.fit()
    s, run = Storage(endpoint_url=s3_endpoint), f"s3://{bucket}/runs/r"
    assert [r["epoch"] for r in artifacts.read_metrics(s, run)] == [1, 2]
    assert [c.epoch for c in ckpt.list_checkpoints(s, run)] == [1, 2]
    assert s.listdir(join(run, "samples")) == ["epoch_0000.png", "epoch_0001.png", "epoch_0002.png"]
