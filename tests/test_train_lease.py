"""The run lease: one live writer per run folder; stale leases are taken over; restarts keep theirs."""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from ganray.storage import Storage, join
from ganray.train.lease import LEASE_FILE, Lease, LeaseError
from ganray.train.loop import Trainer
from tests.test_train_loop import tiny


def write_lease(storage, run, **fields):
    """A lease record as another run would have written it."""
    rec = {
        "owner": "other",
        "host": socket.gethostname(),
        "pid": os.getpid(),  # a live process
        "started": "2026-01-01T00:00:00Z",
        "heartbeat": time.time(),
        "stale_after_s": 180.0,
        **fields,
    }
    storage.write_text(join(run, LEASE_FILE), json.dumps(rec))


@pytest.fixture(params=["local", "memory"])
def run(request, tmp_path):
    return str(tmp_path / "run") if request.param == "local" else f"memory://lease-{time.time_ns()}/run"


def test_a_second_owner_is_refused_until_the_first_releases(run):
    s = Storage()
    first, second = Lease(s, run, "a", heartbeat_s=60), Lease(s, run, "b", heartbeat_s=60)
    first.acquire()
    with pytest.raises(LeaseError, match=rf"run {run} is in use by another run \(host .*pid {os.getpid()}"):
        second.acquire()
    first.release()
    assert not s.exists(join(run, LEASE_FILE))
    second.acquire()
    assert json.loads(s.read_text(join(run, LEASE_FILE)))["owner"] == "b"
    second.release()


def test_stale_and_dead_owners_are_taken_over_with_a_warning(run, caplog):
    s = Storage()
    write_lease(s, run, heartbeat=time.time() - 1000)  # no heartbeat for 1000 s
    with caplog.at_level(logging.WARNING, logger="ganray"):
        Lease(s, run, "me", heartbeat_s=60).acquire()
    assert "taking over the stale lease" in caplog.text
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lease(s, run, pid=dead.pid)  # fresh heartbeat, but its process is gone
    lease = Lease(s, run, "me2", heartbeat_s=60)
    lease.acquire()
    lease.release()
    for garbage in ("\xff not json", '{"owner": "x", "heartbeat": "soon"}', "[1, 2]"):
        s.write_text(join(run, LEASE_FILE), garbage)
        lease = Lease(s, run, "me4", heartbeat_s=60)
        lease.acquire()  # unreadable: treated as stale, with a warning
        lease.release()
    assert caplog.text.count("is unreadable; treating it as stale") == 3
    write_lease(s, run, host="another-host")  # fresh, elsewhere: cannot tell, so refuse
    with pytest.raises(LeaseError, match="host another-host"):
        Lease(s, run, "me3").acquire()


def test_a_restarted_attempt_takes_back_its_own_fresh_lease(run):
    """A Ray worker group restarted after a failure shares its owner token with the dead rank 0."""
    s = Storage()
    write_lease(s, run, owner="trial-1", host="node-that-died")
    lease = Lease(s, run, "trial-1", heartbeat_s=0.05)
    lease.acquire()
    assert json.loads(s.read_text(join(run, LEASE_FILE)))["host"] == socket.gethostname()
    # This process is now the old one: a newer restart of the attempt took the lease over.
    deadline = time.time() + 30
    while lease.lost is None and time.time() < deadline:
        write_lease(s, run, owner="trial-1", pid=os.getpid() + 1)
        time.sleep(0.05)
    with pytest.raises(LeaseError, match="taken over"):
        lease.check()
    lease.release()  # does not remove the newer process's lease
    assert json.loads(s.read_text(join(run, LEASE_FILE)))["pid"] == os.getpid() + 1


def test_the_heartbeat_refreshes_and_notices_a_takeover(run):
    s = Storage()
    lease = Lease(s, run, "me", heartbeat_s=0.05)
    lease.acquire()
    first = json.loads(s.read_text(join(run, LEASE_FILE)))["heartbeat"]
    deadline = time.time() + 30
    while json.loads(s.read_text(join(run, LEASE_FILE)))["heartbeat"] == first and time.time() < deadline:
        time.sleep(0.05)
    assert json.loads(s.read_text(join(run, LEASE_FILE)))["heartbeat"] > first
    while lease.lost is None and time.time() < deadline:
        # Re-written each time: a heartbeat between its read and its write may overwrite it
        # once (no compare-and-swap); the next heartbeat then sees the thief.
        write_lease(s, run, owner="thief")
        time.sleep(0.05)
    with pytest.raises(LeaseError, match="taken over by another run"):
        lease.check()
    lease.release()
    assert json.loads(s.read_text(join(run, LEASE_FILE)))["owner"] == "thief"  # not removed: not ours


def test_the_trainer_refuses_a_folder_another_run_holds_and_writes_nothing(tmp_path):
    s, run = Storage(), join(str(tmp_path), "run")
    write_lease(s, run)
    with pytest.raises(LeaseError, match="in use by another run"):
        Trainer(tiny(tmp_path, "train.epochs=1")).fit()
    assert s.listdir(run) == [LEASE_FILE]
    s.remove(join(run, LEASE_FILE))
    Trainer(tiny(tmp_path, "train.epochs=1")).fit()
    assert LEASE_FILE not in s.listdir(run)  # released at the end
