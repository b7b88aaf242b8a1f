"""Storage: URIs, atomic writes under crashes, listing, copy."""

import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from ganray.storage import ORPHAN_AGE, TMP_MARK, Storage, StorageError, check_name, check_uri, join


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
    # The next write in that folder removes the orphan (its writer is dead).
    Storage().write_bytes(str(target), b"C")
    assert os.listdir(tmp_path) == ["state.bin"]


def test_download_dir(tmp_path):
    s = Storage()
    src = f"memory://dl-{os.getpid()}"
    s.write_text(join(src, "a.txt"), "a")
    s.write_text(join(src, "sub", "b.txt"), "b")
    out = s.download_dir(src, str(tmp_path / "dst"))
    assert sorted(os.path.relpath(p, tmp_path / "dst") for p in out) == ["a.txt", "sub/b.txt"]


def test_bad_scheme_is_a_clear_error():
    with pytest.raises(StorageError, match="'nosuchfs://x': no filesystem for scheme 'nosuchfs'"):
        Storage().fs("nosuchfs://x")


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("s3:/x", "malformed: a URI is SCHEME://..., did you mean 's3://x'"),
        ("s3:x", "did you mean 's3://x'"),
        ("s3://", "names no bucket; write s3://BUCKET/prefix"),
        ("s3:///prefix", "names no bucket"),
        ("gs://bucket", "the gs:// filesystem is not installed"),
        ("memory://", "memory:// lives inside one process"),
        ("memory://g.png", "memory:// lives inside one process"),
        ("", "is empty"),
    ],
)
def test_malformed_or_unusable_uris_are_refused_before_any_write(uri, fragment, tmp_path, monkeypatch):
    """Typos used to become local folders named 's3:', 'gs:' or 'memory:' in the working directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match=re.escape(fragment)):
        check_uri(uri, allow_memory=False)
    if not uri.startswith("memory"):
        with pytest.raises(StorageError):
            Storage().check_writable(uri)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("uri", ["./runs", "/abs/runs", "a:b", "./s3:/x", "s3://bucket/p", "file:///tmp/x"])
def test_usable_uris_pass(uri):
    assert check_uri(uri, allow_memory=False) == uri


def test_join_keeps_the_scheme_separator():
    assert join("s3://", "run") == "s3://run"
    assert join("memory://", "a", "b") == "memory://a/b"
    assert join("s3://bucket/", "/x/", "y") == "s3://bucket/x/y"
    assert join("file:///tmp", "a") == "file:///tmp/a"
    assert join("/", "a") == "/a"


@pytest.mark.parametrize("name", ["../../escape", "..", ".", "a/b", "a\\b", "", " ", "x\x00y", "n" * 256])
def test_names_must_be_one_folder(name):
    with pytest.raises(StorageError, match="is not a single folder name"):
        check_name(name)


def test_orphan_temp_files_of_dead_writers_are_removed(tmp_path):
    """A temp file left by a SIGKILLed writer is deleted by the next write in that folder."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    orphan = tmp_path / f"{TMP_MARK}{socket.gethostname()}.{pid}.abc-state.bin"
    orphan.write_bytes(b"half")
    foreign = tmp_path / f"{TMP_MARK}otherhost.1.abc-state.bin"  # alive as far as we can tell
    foreign.write_bytes(b"half")
    old = tmp_path / f"{TMP_MARK}oldname-state.bin"
    old.write_bytes(b"half")
    os.utime(old, (time.time() - 2 * ORPHAN_AGE,) * 2)
    Storage().write_bytes(str(tmp_path / "other.bin"), b"x")
    assert sorted(os.listdir(tmp_path)) == sorted([foreign.name, "other.bin"])


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


@pytest.mark.parametrize("endpoint", ["::::", "not a url", "http://h:99999", "ftp://h"])
def test_a_malformed_s3_endpoint_names_the_form(endpoint):
    with pytest.raises(StorageError, match=r"is not a URL; write http\(s\)://HOST\[:PORT\]"):
        Storage(endpoint_url=endpoint).exists("s3://bucket/x")
