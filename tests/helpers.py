"""Helpers shared by the tests (import with ``from helpers import ...``)."""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from automl_img.cli import app

REPO = Path(__file__).resolve().parents[1]

# The documented contract, written out here rather than asked of the package: the default storage is
# sqlite:///studies/automl-img.db, and AUTOML_IMG_STUDIES moves that folder (database and every study's
# artifacts) elsewhere.
STUDIES_ENV = "AUTOML_IMG_STUDIES"
STORAGE_ENV = "AUTOML_IMG_STORAGE"
NO_PLUGINS_ENV = "AUTOML_IMG_NO_PLUGINS"


def run(*args: str, expect: int = 0):
    """Invoke the CLI in-process; fail with its output when the exit code is not the expected one."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != expect:
        detail = result.output
        if result.exception and not isinstance(result.exception, SystemExit):
            detail += "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"exit code {result.exit_code} (expected {expect}) for {args}:\n{detail}")
    return result


def studies_folder() -> Path:
    """Where the CLI keeps its default storage and the studies' artifacts right now (cwd and environment)."""
    return Path(os.environ.get(STUDIES_ENV, "studies"))


def storage_url() -> str:
    """The CLI's default storage: ``sqlite:///studies/automl-img.db`` unless AUTOML_IMG_STUDIES moves it."""
    return f"sqlite:///{studies_folder() / 'automl-img.db'}"


def load_study(name: str = "digits") -> optuna.Study:
    """A study from the CLI's default storage."""
    return optuna.load_study(study_name=name, storage=storage_url())


def trials_of(name: str = "digits") -> list[optuna.trial.FrozenTrial]:
    return load_study(name).trials


@contextlib.contextmanager
def studies_at(folder: Path) -> Iterator[Path]:
    """For a module-scoped fixture: CLI calls inside the block keep their studies in ``folder`` and load only
    the built-in plugins (and in-process ones), whatever the current directory is; the cwd is not changed.

    Tests that then use the study point at it again with the ``use_studies`` fixture."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(STUDIES_ENV, str(folder))
        patch.delenv(STORAGE_ENV, raising=False)
        patch.setenv(NO_PLUGINS_ENV, "1")  # the cwd may be the repository, whose plugins/ holds examples
        yield folder
