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
