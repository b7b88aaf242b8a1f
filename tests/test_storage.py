"""Storage: URIs, atomic writes under crashes, listing, copy."""

import os
import subprocess
import sys
import textwrap

import pytest

from ganray.storage import TMP_MARK, Storage, StorageError, join


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return f"memory://ganray-test-{os.getpid()}-{id(request)}"


def test_write_read_list_copy(root):
    s = Storage()
    s.write_text(join(root, "a", "x.txt"), "hello")
    s.write_bytes(join(root, "a", "y.bin"), b"\x00\x01")
    assert s.read_text(join(root, "a", "x.txt")) == "hello"
    assert s.listdir(join(root, "a")) == ["x.txt", "y.bin"]
    s.copy(join(root, "a", "x.txt"), join(root, "b", "x.txt"))
    assert s.read_bytes(join(root, "b", "x.txt")) == b"hello"
    assert s.listdir(join(root, "missing")) == []
    s.append_text(join(root, "a", "log.jsonl"), "1\n")
    s.append_text(join(root, "a", "log.jsonl"), "2\n")
    assert s.read_text(join(root, "a", "log.jsonl")) == "1\n2\n"


def test_failed_write_keeps_previous_content(root):
    s = Storage()
    uri = join(root, "ckpt.pt")
    s.write_bytes(uri, b"good")

    def crash(fh):
        fh.write(b"half of the new")
        raise OSError("disk vanished")

    with pytest.raises(OSError):
        s.atomic_write(uri, crash)
    assert s.read_bytes(uri) == b"good"
    assert s.listdir(root) == ["ckpt.pt"]


def test_killed_process_never_leaves_a_truncated_file(tmp_path):
    """A real process dies (SIGKILL) in the middle of a write: the old file survives whole."""
    target = tmp_path / "state.bin"
    Storage().write_bytes(str(target), b"A" * 1000)
    script = textwrap.dedent(
        f"""
        import os, signal
        from ganray.storage import Storage
        def writer(fh):
            fh.write(b"B" * 500)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        Storage().atomic_write({str(target)!r}, writer)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert target.read_bytes() == b"A" * 1000
    # The orphaned temp file is hidden from listings.
    assert Storage().listdir(str(tmp_path)) == ["state.bin"]
    assert any(TMP_MARK in n for n in os.listdir(tmp_path))


def test_download_dir(tmp_path):
    s = Storage()
    src = f"memory://dl-{os.getpid()}"
    s.write_text(join(src, "a.txt"), "a")
    s.write_text(join(src, "sub", "b.txt"), "b")
    out = s.download_dir(src, str(tmp_path / "dst"))
    assert sorted(os.path.relpath(p, tmp_path / "dst") for p in out) == ["a.txt", "sub/b.txt"]


def test_bad_scheme_is_a_clear_error():
    with pytest.raises(StorageError, match="cannot open storage URI 'nosuchfs://x'"):
        Storage().fs("nosuchfs://x")


def test_check_writable_names_the_problem(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot write to storage"):
        Storage().check_writable(str(blocker / "sub"))


def test_s3_endpoint_from_settings_and_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert Storage().options("s3://b/p") == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    explicit = Storage(endpoint_url="http://127.0.0.1:10", region="eu-west-1").options("s3://b/p")
    assert explicit["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:10", "region_name": "eu-west-1"}
    assert Storage().options("/local/path") == {}
