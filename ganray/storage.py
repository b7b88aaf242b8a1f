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

import contextlib
import errno
import io
import os
import posixpath
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

TMP_MARK = ".ganray-tmp-"
# A temp file older than this (seconds) whose writer cannot be proven alive is an
# orphan of a killed process: no single ganray write takes an hour.
ORPHAN_AGE = 3600.0
# Schemes whose first path component is a bucket (container) that must be named.
OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss")
URI_FORMS = "a local path, or s3://BUCKET/prefix (S3 or an S3-compatible store)"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.S)


class StorageError(RuntimeError):
    """A storage URI cannot be reached, read or written."""


def _known_scheme(scheme: str) -> bool:
    from fsspec.registry import known_implementations, registry

    return scheme in known_implementations or scheme in registry


def check_uri(uri: Any, allow_memory: bool = True) -> str:
    """Return ``uri`` if it names a place ganray can use, else raise StorageError with the fix.

    Refused: an empty URI; ``scheme:/x`` or ``scheme:x`` for a known scheme (a
    typo that would otherwise become a local folder named ``s3:``); a scheme
    with no installed filesystem; an object store URI without a bucket
    (``s3://``); and, unless ``allow_memory``, ``memory://`` (it lives in one
    process and vanishes when that process exits, so no CLI can use it).
    """
    if not isinstance(uri, str) or not uri.strip():
        raise StorageError(f"storage URI {uri!r} is empty; give {URI_FORMS}")
    if "\x00" in uri:
        raise StorageError(f"storage URI {uri!r} contains a NUL byte; give {URI_FORMS}")
    m = _SCHEME.match(uri)
    if m is None:
        return uri  # a plain local path
    scheme, rest = m.group(1).lower(), m.group(2)
    if not rest.startswith("//"):
        if _known_scheme(scheme):
            fixed = f"{scheme}://{rest.lstrip('/')}"
            raise StorageError(
                f"storage URI {uri!r} is malformed: a URI is SCHEME://..., did you mean {fixed!r}? "
                f"(for a local folder with a colon in its name write ./{uri})"
            )
        return uri  # a local name that happens to contain a colon
    if scheme in ("file", "local"):
        return uri
    if not _known_scheme(scheme):
        raise StorageError(f"storage URI {uri!r}: no filesystem for scheme {scheme!r}; give {URI_FORMS}")
    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as e:
        raise StorageError(
            f"storage URI {uri!r}: the {scheme}:// filesystem is not installed ({e}); give {URI_FORMS}"
        ) from None
    if scheme in OBJECT_STORES and not rest[2:].split("/", 1)[0].strip():
        raise StorageError(f"storage URI {uri!r} names no bucket; write {scheme}://BUCKET/prefix")
    if scheme == "memory" and not allow_memory:
        raise StorageError(
            f"storage URI {uri!r}: memory:// lives inside one process and is gone when it exits, "
            f"so nothing written there could be read back; give {URI_FORMS}"
        )
    return uri


def check_name(name: Any, what: str = "run name") -> str:
    """Return ``name`` if it is one path component (no '/', '..', NUL), else raise StorageError."""
    if not isinstance(name, str) or not name.strip():
        why = "it is empty"
    elif name in (".", ".."):
        why = f"{name!r} is not a folder of its own"
    elif any(c in name for c in "/\\\x00"):
        why = "it contains '/', '\\' or NUL"
    elif name.startswith(TMP_MARK):
        why = f"names starting with {TMP_MARK} are ganray's temporary files"
    elif len(name.encode()) > 255:
        why = "it is longer than 255 bytes"
    else:
        return name
    raise StorageError(
        f"{what} {name!r} is not a single folder name ({why}): use letters, digits, '-', '_' or '.'"
    )


def _credential_hint(uri: str, e: BaseException) -> StorageError | None:
    """A StorageError with the fix for an S3 credential/permission/endpoint failure, else None."""
    if protocol_of(uri) not in ("s3", "s3a"):
        return None
    names = {c.__name__ for c in type(e).__mro__}
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        what = "no AWS credentials were found"
    elif names & {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionError"}:
        what = "the S3 endpoint cannot be reached"
    elif isinstance(e, PermissionError) or names & {"ClientError", "NoSuchBucket"}:
        what = "access was refused or the bucket does not exist"
    else:
        return None
    return StorageError(
        f"{uri}: {what} ({type(e).__name__}: {e}). Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        f"(or AWS_PROFILE), check that the bucket exists, and for S3-compatible stores pass "
        f"--endpoint-url or set AWS_ENDPOINT_URL"
    )


@contextlib.contextmanager
def _friendly(uri: str) -> Iterator[None]:
    """Turn S3 credential/endpoint failures into a StorageError naming the fix."""
    try:
        yield
    except (FileNotFoundError, StorageError):
        raise
    except Exception as e:  # noqa: BLE001 - re-raised unchanged unless we know the fix
        err = _credential_hint(uri, e)
        if err is None:
            raise
        raise err from e


def _s3_options(endpoint_url: str = "", region: str = "") -> dict[str, Any]:
    """s3fs options from explicit settings, falling back to the AWS environment."""
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL", "")
    if endpoint:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(endpoint)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a bad port
            ok = False
        if not ok:
            raise StorageError(
                f"S3 endpoint {endpoint!r} (--endpoint-url, storage.endpoint_url or AWS_ENDPOINT_URL) "
                f"is not a URL; write http(s)://HOST[:PORT], e.g. http://127.0.0.1:9000"
            )
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
    """Join path parts onto a URI with '/' (also for local paths); ``scheme://`` stays whole."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "", uri
    out = rest.rstrip("/") if rest not in ("/",) else rest
    for p in parts:
        part = str(p).strip("/")
        out = posixpath.join(out, part) if out else part
    return f"{scheme}://{out}" if sep else out


def relative_to(uri: str, root: str) -> str:
    """``uri`` as a '/'-separated path below ``root`` (ValueError when it is not below it)."""
    prefix = root.rstrip("/") + "/"
    if not uri.startswith(prefix):
        raise ValueError(f"{uri} is not below {root}")
    return uri[len(prefix) :]


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
        check_uri(uri)
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
        with _friendly(uri):
            return fs.exists(path)

    def read_bytes(self, uri: str) -> bytes:
        fs, path = self.fs(uri)
        try:
            with _friendly(uri):
                return fs.cat_file(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{uri}: no such file") from None
        except IsADirectoryError:
            raise StorageError(f"{uri} is a folder, not a file") from None

    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode()

    def open(self, uri: str, mode: str = "rb") -> IO:
        fs, path = self.fs(uri)
        return fs.open(path, mode)

    def listdir(self, uri: str) -> list[str]:
        """Base names of the entries directly under ``uri`` (sorted; temp files hidden)."""
        fs, path = self.fs(uri)
        try:
            with _friendly(uri):
                names = [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names if TMP_MARK not in n and n)

    # ------------------------------------------------------------ writing
    def makedirs(self, uri: str) -> None:
        fs, path = self.fs(uri)
        with _friendly(uri):
            fs.makedirs(path, exist_ok=True)

    def atomic_write(self, uri: str, writer: Callable[[IO[bytes]], None]) -> None:
        """Write ``uri`` through ``writer(fileobj)`` so that it appears whole or not at all.

        If ``writer`` raises, the previous content of ``uri`` (if any) is untouched.
        """
        fs, path = self.fs(uri)
        if is_local(uri):
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            remove_orphans(parent)
            tmp = os.path.join(parent, f"{_tmp_prefix()}{uuid.uuid4().hex}-{os.path.basename(path)}")
            try:
                try:
                    fh = open(tmp, "wb")  # noqa: SIM115 - closed below; its errors name the target
                except OSError as e:
                    raise type(e)(e.errno, e.strerror, path) from None
                with fh:
                    writer(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except OSError as e:
                if e.errno == errno.ENOSPC:  # name the file: the bare error does not
                    raise OSError(e.errno, "no space left on device", uri) from None
                raise
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
            return
        # Object stores: build the bytes in memory, then one PUT (atomic per object).
        buf = io.BytesIO()
        writer(buf)
        parent = posixpath.dirname(path)
        with _friendly(uri):
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
        with _friendly(uri):
            if fs.exists(path):
                fs.rm(path, recursive=recursive)

    def copy(self, src: str, dst: str) -> None:
        """Copy one file between any two URIs (possibly different filesystems)."""
        self.write_bytes(dst, self.read_bytes(src))

    def upload_file(self, local: str, uri: str) -> None:
        """Copy local file ``local`` to ``uri`` without holding it in memory (atomic either way)."""
        if is_local(uri):
            with open(local, "rb") as src:
                self.atomic_write(uri, lambda fh: shutil.copyfileobj(src, fh, 1 << 20))
            return
        fs, path = self.fs(uri)
        with _friendly(uri):
            fs.put_file(local, path)

    def download_dir(self, src: str, dst_dir: str) -> list[str]:
        """Copy every file below ``src`` into local ``dst_dir``; return local paths."""
        fs, path = self.fs(src)
        out = []
        with _friendly(src):
            found = fs.find(path)
        for f in found:
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
        check_uri(uri)
        probe = join(uri, f"{TMP_MARK}probe-{uuid.uuid4().hex}")
        created = _missing_local_dirs(uri)
        try:
            self.write_bytes(probe, b"ok")
            self.remove(probe)
            for d in created:  # leave no empty folder behind: the caller may still fail
                with contextlib.suppress(OSError):
                    os.rmdir(d)
        except StorageError:
            raise  # already names the URI and the fix
        except Exception as e:  # noqa: BLE001 - we re-raise with context
            hint = ""
            if protocol_of(uri) in ("s3", "s3a"):
                hint = (
                    " Check that the bucket exists, that AWS credentials are set "
                    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile), and for "
                    "S3-compatible stores set storage.endpoint_url or AWS_ENDPOINT_URL."
                )
            raise StorageError(f"cannot write to storage {uri!r}: {type(e).__name__}: {e}.{hint}") from e


def _missing_local_dirs(uri: str) -> list[str]:
    """The folders (deepest first) a write under local ``uri`` would create; [] for remote URIs."""
    if not is_local(uri):
        return []
    path = os.path.abspath(uri.split("://", 1)[1] if "://" in uri else uri)
    out = []
    while path and not os.path.exists(path) and os.path.dirname(path) != path:
        out.append(path)
        path = os.path.dirname(path)
    return out


def _tmp_prefix() -> str:
    """``.ganray-tmp-<host>.<pid>.``: lets a later writer tell a live writer's temp from an orphan."""
    return f"{TMP_MARK}{socket.gethostname()}.{os.getpid()}."


def _writer_alive(name: str) -> bool:
    """Whether the process that named temp file ``name`` may still be writing it."""
    host_pid = name[len(TMP_MARK) :].split(".", 2)
    if len(host_pid) < 3 or host_pid[0] != socket.gethostname() or not host_pid[1].isdigit():
        return True  # another machine (or an old name): only its age can tell
    try:
        os.kill(int(host_pid[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(folder: str, now: float | None = None) -> list[str]:
    """Delete temp files in local ``folder`` left by killed writers; return their names.

    A temp file is an orphan when its writer (host + pid in its name) is this
    machine's and dead, or when it is older than ORPHAN_AGE seconds.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(TMP_MARK)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(folder, name)
        try:
            old = now - os.path.getmtime(path) > ORPHAN_AGE
            if (old or not _writer_alive(name)) and os.path.isfile(path):
                os.remove(path)
                removed.append(name)
        except OSError:
            continue  # another writer removed or renamed it first
    return removed
