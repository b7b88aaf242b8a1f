"""Logging set-up shared by the CLIs and the Ray workers."""

from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream of the
    moment logging was set up (test runners and embedding tools swap and close it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Send ganray's INFO logs (progress, resumes, warnings) to stderr, once per process."""
    logger = logging.getLogger("ganray")
    logger.setLevel(level)
    if not any(getattr(h, "_ganray", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._ganray = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
