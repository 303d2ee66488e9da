"""What C++ libraries print straight to file descriptors 1 and 2 (where Python's logging cannot reach):
muted, or sent to a log file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


@contextmanager
def native_stderr_muted() -> Iterator[None]:
    """Like ``muted_stderr`` for C++ code only: Python's own ``sys.stderr`` (warnings, tracebacks) still reaches
    the terminal. For running other people's code that may import TensorFlow (plugins)."""
    try:
        python_on_fd_2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # captured (a test runner's stream): fd 2 is not Python's
        python_on_fd_2 = False
    if not python_on_fd_2:
        with muted_stderr():
            yield
        return
    sys.stderr.flush()
    python_stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    try:
        with contextlib.redirect_stderr(python_stderr), muted_stderr():
            yield
    finally:
        python_stderr.close()


@contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Append everything printed during the block, by Python or by C++ (converters, TensorFlow), to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        try:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                yield
        finally:
            handle.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            _reattach_handlers(handle)


def _reattach_handlers(log) -> None:
    """A logging handler made during the block (TensorFlow makes its own on first use) took the log as its
    stream; give it back standard error, or the process's next warning fails on a closed file."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream is log:
                handler.setStream(sys.stderr)
