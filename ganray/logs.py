"""Logging set-up shared by the CLIs and the Ray workers."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: int = logging.INFO) -> None:
    """Send ganray's INFO logs (progress, resumes, warnings) to stderr, once per process."""
    logger = logging.getLogger("ganray")
    logger.setLevel(level)
    if not any(getattr(h, "_ganray", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._ganray = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
