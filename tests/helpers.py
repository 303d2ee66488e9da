"""Helpers shared by the tests (import with ``from helpers import ...``)."""

from __future__ import annotations

import traceback
from pathlib import Path

from typer.testing import CliRunner

from automl_img.cli import app

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, expect: int = 0):
    """Invoke the CLI in-process; fail with its output when the exit code is not the expected one."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != expect:
        detail = result.output
        if result.exception and not isinstance(result.exception, SystemExit):
            detail += "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"exit code {result.exit_code} (expected {expect}) for {args}:\n{detail}")
    return result
