"""The run lease on a real S3 endpoint (moto's server on loopback): refuse, take over, restart."""

import json
import time

import pytest

from ganray.storage import Storage, join
from ganray.train.lease import LEASE_FILE, Lease, LeaseError

pytestmark = pytest.mark.integration


def test_lease_on_s3_refuses_a_second_run_and_takes_over_a_stale_one(bucket, s3_endpoint, caplog):
    s = Storage(endpoint_url=s3_endpoint)
    run = f"s3://{bucket}/runs/r"
    first = Lease(s, run, "first", heartbeat_s=0.2)
    first.acquire()
    with pytest.raises(LeaseError, match="in use by another run"):
        Lease(s, run, "second").acquire()
    restarted = Lease(s, run, "first")  # the same attempt, restarted: takes it back at once
    restarted.acquire()
    first.release()
    restarted.release()
    rec = {"owner": "dead", "host": "gone", "pid": 1, "started": "x", "heartbeat": time.time() - 999}
    s.write_text(join(run, LEASE_FILE), json.dumps({**rec, "stale_after_s": 180}))
    with caplog.at_level("WARNING", logger="ganray"):
        second = Lease(s, run, "second", heartbeat_s=60)
        second.acquire()
    assert "taking over the stale lease" in caplog.text
    second.release()
    assert not s.exists(join(run, LEASE_FILE))


def test_restart_on_s3_moves_the_run_aside_and_refuses_a_live_one(bucket, s3_endpoint):
    from ganray.config import load_config
    from ganray.train.cli import RESTARTED_DIR, restart_run

    s = Storage(endpoint_url=s3_endpoint)
    root = f"s3://{bucket}/runs"
    cfg = load_config("quickstart", [f"storage.uri={root}", "storage.run_name=r"])
    s.write_text(join(root, "r", "checkpoints", "epoch_0001.json"), "{}")
    s.write_text(
        join(root, "r", LEASE_FILE),
        json.dumps({"owner": "x", "host": "h", "pid": 1, "heartbeat": time.time()}),
    )
    with pytest.raises(LeaseError, match="in use by another run"):
        restart_run(cfg)
    s.remove(join(root, "r", LEASE_FILE))
    dest = restart_run(cfg)
    assert dest.startswith(join(root, RESTARTED_DIR, "r-"))
    assert s.read_text(join(dest, "checkpoints", "epoch_0001.json")) == "{}"
    assert not s.exists(join(root, "r", "checkpoints", "epoch_0001.json"))
