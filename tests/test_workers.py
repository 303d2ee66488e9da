"""Many workers, one study: local processes on a journal file, and real PostgreSQL for many machines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from pg_server import PostgresUnavailable, postgres_server

from automl_img.study.storage import open_storage

PASSWORD = "s3cret-Pa55"

pytestmark = pytest.mark.slow  # several search processes; a real PostgreSQL server


def start_workers(count: int, digits_dir: Path, storage: str, trials: int) -> list[subprocess.Popen]:
    command = [sys.executable, "-m", "automl_img", "search", str(digits_dir), "--study", "shared", "--storage",
               storage, "--trials", str(trials), "--epochs", "2", "-p", "image_size=8"]
    return [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(count)]


def check_shared_study(workers: list[subprocess.Popen], storage: str, trials: int) -> list[str]:
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    counted = [t for t in study.trials if not t.user_attrs.get("surplus")]
    finished = [t for t in counted if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == trials, [(t.number, t.state.name, t.user_attrs) for t in study.trials]
    assert not [t for t in counted if t.state.name in ("FAIL", "RUNNING")]
    assert len({t.number for t in study.trials}) == len(study.trials)  # no duplicates
    searches = {worker.pid for worker in workers}
    assert {t.user_attrs["worker"]["search_pid"] for t in finished} <= searches
    assert len({t.user_attrs["worker"]["search_pid"] for t in finished}) >= 2  # the work was shared
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    assert study.best_trial.value == max(t.value for t in complete)
    return outputs


def test_local_workers_share_one_journal_file(workdir, digits_dir):
    storage = str(workdir / "studies" / "shared.log")
    check_shared_study(start_workers(2, digits_dir, storage, 4), storage, 4)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server on loopback, installed with apt-get when missing, stopped at the end."""
    try:
        with postgres_server(PASSWORD) as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))


def test_three_workers_on_postgresql_finish_the_study_once(workdir, digits_dir, postgres_url):
    outputs = check_shared_study(start_workers(3, digits_dir, postgres_url, 6), postgres_url, 6)
    assert not any(PASSWORD in output for output in outputs)
    assert all("postgresql://automl:***@127.0.0.1" in output for output in outputs)


def test_wrong_password_is_a_one_line_error_without_the_password(workdir, digits_dir, postgres_url):
    from helpers import run

    wrong = postgres_url.replace(PASSWORD, "not-" + PASSWORD)
    result = run("search", digits_dir, "--storage", wrong, expect=1)
    assert "cannot open storage postgresql://automl:***@" in result.output
    assert PASSWORD not in result.output and "Traceback" not in result.output
