"""A local copy of remote data, made once per URI.

Raw sources (IDX files, CIFAR pickles, image folders) are immutable public
datasets, so a remote folder is copied whole into ``<cache>/data/<uri hash>``
the first time and reused afterwards; delete that folder to refresh it.
Parquet shards are cached one by one and checked against the manifest's
sha256 on every read, so a re-prepared dataset under the same URI is fetched
again while an unchanged one never is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid

from ganray.storage import Storage, is_local

DEFAULT_CACHE = "~/.cache/ganray"


def cache_root(cache_dir: str = "") -> str:
    """The local cache folder: ``cache_dir`` or ~/.cache/ganray."""
    return os.path.abspath(os.path.expanduser(cache_dir or DEFAULT_CACHE))


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (strips ``file://``)."""
    return uri.split("://", 1)[1] if "://" in uri else uri


def uri_cache_dir(uri: str, cache_dir: str = "", kind: str = "data") -> str:
    """The cache folder of one remote URI, named by its hash (16 hex chars).

    ``kind`` separates whole-folder copies ("data") from shard caches ("shards").
    """
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return os.path.join(cache_root(cache_dir), kind, key)


def localize_dir(storage: Storage, uri: str, cache_dir: str = "") -> str:
    """A local folder holding the files under ``uri``, downloading them at most once.

    The download goes to a temporary sibling that is renamed into place when
    complete, so an interrupted copy is never reused and concurrent readers on
    one machine cannot see half a folder.
    """
    if is_local(uri):
        return local_path(uri)
    final = uri_cache_dir(uri, cache_dir)
    if os.path.isdir(final):
        return final
    tmp = f"{final}.tmp-{uuid.uuid4().hex}"
    try:
        if not storage.download_dir(uri, tmp):
            raise FileNotFoundError(f"{uri}: no files found")
        with open(os.path.join(tmp, ".ganray-source"), "w") as fh:
            fh.write(uri + "\n")  # tells a human which URI this folder mirrors
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isdir(final):  # a concurrent reader won the race otherwise
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
