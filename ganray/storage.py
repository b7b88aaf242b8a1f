"""Filesystems from URIs, atomic writes, listing and copy.

Every byte ganray persists (datasets, checkpoints, grids, metrics) goes through
this module, so the same code serves a local path, ``memory://`` (tests) and
``s3://bucket/prefix`` on AWS or any S3-compatible endpoint.

Atomicity: on a local disk a file is written to a temporary sibling, fsynced and
renamed over the target (``os.replace`` is atomic on POSIX). On object stores a
single PUT is atomic: readers see the old object or the whole new one. Either
way a crash mid-write never leaves a truncated file under the final name.
"""

from __future__ import annotations

import io
import os
import posixpath
import uuid
from collections.abc import Callable
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

TMP_MARK = ".ganray-tmp-"


class StorageError(RuntimeError):
    """A storage URI cannot be reached, read or written."""


def _s3_options(endpoint_url: str = "", region: str = "") -> dict[str, Any]:
    """s3fs options from explicit settings, falling back to the AWS environment."""
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "")
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if region:
        client_kwargs["region_name"] = region
    return {"client_kwargs": client_kwargs} if client_kwargs else {}


def protocol_of(uri: str) -> str:
    return uri.split("://", 1)[0] if "://" in uri else "file"


def is_local(uri: str) -> bool:
    return protocol_of(uri) in ("file", "local")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI with '/' (also for local paths)."""
    out = uri.rstrip("/") if uri not in ("/",) else uri
    for p in parts:
        out = posixpath.join(out, str(p).strip("/"))
    return out


class Storage:
    """A filesystem bound to one set of connection settings.

    ``Storage()`` reads ``AWS_ENDPOINT_URL`` / ``AWS_REGION`` for s3:// URIs;
    pass ``endpoint_url`` to target an S3-compatible store (MinIO, moto, Ceph).
    All methods take full URIs or local paths.
    """

    def __init__(self, endpoint_url: str = "", region: str = "") -> None:
        self.endpoint_url = endpoint_url
        self.region = region

    @classmethod
    def from_config(cls, cfg: Any) -> Storage:
        """Build from a ``StorageConfig`` (or anything with endpoint_url/region)."""
        return cls(getattr(cfg, "endpoint_url", ""), getattr(cfg, "region", ""))

    def options(self, uri: str) -> dict[str, Any]:
        if protocol_of(uri) in ("s3", "s3a"):
            return _s3_options(self.endpoint_url, self.region)
        return {}

    def fs(self, uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
        """The fsspec filesystem and the path inside it for ``uri``."""
        try:
            return url_to_fs(uri, **self.options(uri))
        except (ImportError, ValueError) as e:
            raise StorageError(
                f"cannot open storage URI {uri!r}: {e}. Use a local path, memory://..., "
                f"or s3://bucket/prefix (needs s3fs)"
            ) from e

    def arrow_fs(self, uri: str) -> tuple[Any, str]:
        """A pyarrow filesystem wrapping the fsspec one (for Parquet I/O)."""
        import pyarrow.fs as pafs

        fs, path = self.fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path

    # ------------------------------------------------------------ reading
    def exists(self, uri: str) -> bool:
        fs, path = self.fs(uri)
        return fs.exists(path)

    def read_bytes(self, uri: str) -> bytes:
        fs, path = self.fs(uri)
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{uri}: no such file") from None

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode()

    def open(self, uri: str, mode: str = "rb") -> IO:
        fs, path = self.fs(uri)
        return fs.open(path, mode)

    def listdir(self, uri: str) -> list[str]:
        """Base names of the entries directly under ``uri`` (sorted; temp files hidden)."""
        fs, path = self.fs(uri)
        try:
            names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if TMP_MARK not in n and n)

    # ------------------------------------------------------------ writing
    def makedirs(self, uri: str) -> None:
        fs, path = self.fs(uri)
        fs.makedirs(path, exist_ok=True)

    def atomic_write(self, uri: str, writer: Callable[[IO[bytes]], None]) -> None:
        """Write ``uri`` through ``writer(fileobj)`` so that it appears whole or not at all.

        If ``writer`` raises, the previous content of ``uri`` (if any) is untouched.
        """
        fs, path = self.fs(uri)
        if is_local(uri):
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f"{TMP_MARK}{uuid.uuid4().hex}-{os.path.basename(path)}")
            try:
                with open(tmp, "wb") as fh:
                    writer(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            return
        # Object stores: build the bytes in memory, then one PUT (atomic per object).
        buf = io.BytesIO()
        writer(buf)
        parent = posixpath.dirname(path)
        if parent and protocol_of(uri) == "memory":
            fs.makedirs(parent, exist_ok=True)
        fs.pipe_file(path, buf.getvalue())

    def write_bytes(self, uri: str, data: bytes) -> None:
        self.atomic_write(uri, lambda fh: fh.write(data))

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode())

    def append_text(self, uri: str, text: str) -> None:
        """Append to a small text file (JSON lines) by an atomic rewrite."""
        old = self.read_bytes(uri) if self.exists(uri) else b""
        self.write_bytes(uri, old + text.encode())

    def remove(self, uri: str, recursive: bool = False) -> None:
        fs, path = self.fs(uri)
        if fs.exists(path):
            fs.rm(path, recursive=recursive)

    def copy(self, src: str, dst: str) -> None:
        """Copy one file between any two URIs (possibly different filesystems)."""
        self.write_bytes(dst, self.read_bytes(src))

    def download_dir(self, src: str, dst_dir: str) -> list[str]:
        """Copy every file below ``src`` into local ``dst_dir``; return local paths."""
        fs, path = self.fs(src)
        out = []
        for f in fs.find(path):
            if TMP_MARK in f:
                continue
            rel = posixpath.relpath(f, path)
            local = os.path.join(dst_dir, rel)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with open(local, "wb") as fh:
                fh.write(fs.cat_file(f))
            out.append(local)
        return out

    def check_writable(self, uri: str) -> None:
        """Fail early, with a fix, if ``uri`` cannot be written (missing bucket, bad credentials)."""
        probe = join(uri, f"{TMP_MARK}probe-{uuid.uuid4().hex}")
        try:
            self.write_bytes(probe, b"ok")
            self.remove(probe)
        except Exception as e:  # noqa: BLE001 - we re-raise with context
            hint = ""
            if protocol_of(uri) in ("s3", "s3a"):
                hint = (
                    " Check that the bucket exists, that AWS credentials are set "
                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile), and for "
                    "S3-compatible stores set storage.endpoint_url or AWS_ENDPOINT_URL."
                )
            raise StorageError(f"cannot write to storage {uri!r}: {type(e).__name__}: {e}.{hint}") from e
