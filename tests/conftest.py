"""Shared fixtures: real PNG files written from scikit-learn's digits, a scratch working folder, studies kept
elsewhere, plugins registered for one test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import NO_PLUGINS_ENV, STORAGE_ENV, STUDIES_ENV

from automl_img.default_plugins.digits import write_digits
from automl_img.plugins import pm
from automl_img.searching.runners import RUNNER_ENV

# Trials run in the test's own process (no TensorFlow start-up per trial), searches started as subprocesses
# included; tests marked ``system`` run them in trial processes, as a user's search does. ``AUTOML_IMG_TRIAL_RUNNER=
# process pytest`` runs every test's trials in trial processes.
os.environ.setdefault(RUNNER_ENV, "here")


# The longest modules first (measured: each takes 1-3 minutes of a worker), so that the two workers of ``-n auto``
# end together instead of one running the last long module alone while the other waits.
_LONGEST_FIRST = (
    "test_workers.py",
    "test_backbones.py",
    "test_ecosystem.py",
    "test_core.py",
    "test_notebook.py",
    "test_crash.py",
    "test_kerastuner.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within each module and among the rest stays as collected


@pytest.fixture(autouse=True)
def _trial_processes_for_system_tests(request, monkeypatch) -> None:
    if request.node.get_closest_marker("system"):
        monkeypatch.setenv(RUNNER_ENV, "process")


@pytest.fixture(scope="session", autouse=True)
def _process_state_at_start() -> tuple[Path, str | None]:
    return Path.cwd(), os.environ.get(STUDIES_ENV)


@pytest.fixture(autouse=True)
def _process_state_is_restored(_process_state_at_start):
    """No fixture, of any scope, leaves the process in another directory or with its studies moved between tests
    (a module-scoped fixture keeps its studies elsewhere with ``helpers.studies_at``, not with chdir)."""
    assert (Path.cwd(), os.environ.get(STUDIES_ENV)) == _process_state_at_start, "changed before this test"
    yield
    assert (Path.cwd(), os.environ.get(STUDIES_ENV)) == _process_state_at_start, "left changed by this test"


@pytest.fixture(autouse=True)
def _in_process_plugins_are_removed() -> None:
    """A plugin a test registers in-process (``automl_img.search(architecture=obj)`` does) is gone after it, so a
    later test in the same worker sees only the built-ins."""
    before = set(pm.get_plugins())
    yield
    for plugin in set(pm.get_plugins()) - before:
        pm.unregister(plugin)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """All 1,797 digits as 8x8 grayscale PNGs, one folder per class. Treat as read-only."""
    return write_digits(tmp_path_factory.mktemp("data") / "digits")


def _first_of_each_class(digits_dir: Path, data: Path, count: int) -> Path:
    for digit in range(10):
        (data / str(digit)).mkdir(parents=True)
        for file in sorted((digits_dir / str(digit)).glob("*.png"))[:count]:
            shutil.copy(file, data / str(digit) / file.name)
    return data


@pytest.fixture(scope="session")
def few_digits(tmp_path_factory, digits_dir) -> Path:
    """The first dozen digits of each class: 120 images, for one quick trial. Treat as read-only."""
    return _first_of_each_class(digits_dir, tmp_path_factory.mktemp("few") / "few-digits", 12)


@pytest.fixture(scope="session")
def some_digits(tmp_path_factory, digits_dir) -> Path:
    """The first 80 digits of each class: 800 images, for searches that must learn but need not learn well.
    Treat as read-only."""
    return _first_of_each_class(digits_dir, tmp_path_factory.mktemp("some") / "some-digits", 80)


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
    monkeypatch.delenv(STUDIES_ENV, raising=False)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    monkeypatch.delenv(NO_PLUGINS_ENV, raising=False)
    return folder


@pytest.fixture
def use_studies(workdir, monkeypatch) -> Callable[[Path], Path]:
    """``use_studies(folder)``: for this test, the CLI's default storage and study artifacts are in ``folder``
    (a study a module-scoped fixture made with ``helpers.studies_at``); the cwd is an empty ``workdir``."""

    def use(folder: Path) -> Path:
        monkeypatch.setenv(STUDIES_ENV, str(folder))
        return folder

    return use


@pytest.fixture
def register_plugin() -> Callable[..., object]:
    """``register_plugin(plugin, name=None)``: register on the process's plugin manager for this test only."""
    registered: list[object] = []

    def register(plugin: object, name: str | None = None) -> object:
        pm.register(plugin, name=name)
        registered.append(plugin)
        return plugin

    yield register
    for plugin in reversed(registered):
        pm.unregister(plugin)
