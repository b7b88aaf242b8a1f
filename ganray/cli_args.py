"""Argument types shared by the CLIs: bounded integers and usable storage URIs.

argparse turns an ``ArgumentTypeError`` into a one-line usage error (exit 2),
so a bad option is refused before anything is read, written or connected.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ganray.storage import StorageError, check_uri


def int_in(low: int, high: int | None = None, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (``why`` explains the bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}{why}")
        return value

    return parse


def uri(allow_memory: bool = False, allow_empty: bool = False) -> Callable[[str], str]:
    """An argparse type: a storage URI or local path ganray can use (see storage.check_uri)."""

    def parse(text: str) -> str:
        if allow_empty and text == "":
            return text
        try:
            return check_uri(text, allow_memory=allow_memory)
        except StorageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


SEED = int_in(0, 2**32 - 1, " (seeds are numpy's 32-bit range)")
