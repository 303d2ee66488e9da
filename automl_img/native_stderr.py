"""Muting what C++ libraries print straight to file descriptor 2 (where Python's logging cannot)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def muted_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block: TensorFlow's start-up notes, LiteRT's
    "Created TensorFlow Lite XNNPACK delegate" line. Python exceptions still propagate."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
