"""Shared fixtures: real PNG files written from scikit-learn's digits, a scratch working folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from automl_img.default_plugins.digits import write_digits



@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """All 1,797 digits as 8x8 grayscale PNGs, one folder per class. Treat as read-only."""
    return write_digits(tmp_path_factory.mktemp("data") / "digits")


@pytest.fixture
def digits_copy(digits_dir, tmp_path) -> Path:
    """A private copy of the digits folder that a test may damage."""
    return Path(shutil.copytree(digits_dir, tmp_path / "digits-copy"))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder, so studies/ and plugins/ are the test's own."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("AUTOML_IMG_STORAGE", raising=False)
    monkeypatch.delenv("AUTOML_IMG_NO_PLUGINS", raising=False)
    return folder
