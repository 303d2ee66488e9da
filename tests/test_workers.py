"""Many workers, one study, as on many machines: real PostgreSQL or a journal file for the study, and trial
weights in a store every machine reaches (--artifacts): S3-compatible object storage (moto's server on loopback)
or a shared folder. The workers share the trials, a working directory that holds none of the trial folders
exports bundles that score what the trials reported, and a store or database that cannot be used is named in
one line before any trial."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import optuna
import pytest
from helpers import run
from pg_server import PostgresUnavailable, postgres_server
from s3_server import free_port, s3_server

from automl_img.study.storage import open_storage

pytestmark = [pytest.mark.slow, pytest.mark.system]  # search processes, a PostgreSQL server, an S3 server

POSTGRES_PASSWORD = "s3cret-Pa55"
BUCKET = "automl-img-trials"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def start_workers(
    count: int, digits_dir: Path, storage: str, trials: int, *extra: str, study: str
) -> list[subprocess.Popen]:
    """``count`` search processes on one study, as on as many machines."""
    # float32: the export, rebuilt elsewhere in float32, must score on val exactly what the trial reported
    # (a trial trained in bfloat16 reports its val scores computed in bfloat16)
    command = [
        sys.executable,
        "-m",
        "automl_img",
        "search",
        str(digits_dir),
        "--study",
        study,
        "--storage",
        storage,
        "--trials",
        str(trials),
        "--epochs",
        "2",
        "-p",
        "image_size=8",
        "--precision",
        "float32",
        *extra,
    ]
    return [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(count)
    ]


def check_shared_study(workers: list[subprocess.Popen], storage: str, trials: int, name: str) -> list[str]:
    """The workers finished the study's trials once between them; returns what each printed."""
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
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


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server on loopback, installed with apt-get when missing, stopped at the end."""
    try:
        with postgres_server(POSTGRES_PASSWORD) as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """boto3's standard environment, pointing at the loopback server; search processes inherit it."""
    for name, value in (
        ("AWS_ENDPOINT_URL", s3_endpoint),
        ("AWS_ACCESS_KEY_ID", "automl-img-tests"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    if BUCKET not in [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    return client


def export_elsewhere(folder: Path, monkeypatch, study: str, storage: str) -> tuple[dict, dict]:
    """Export from a working directory with no studies/ folder, as on a machine that ran none of the trials:
    the three best trials averaged, then the best alone. Returns both bundles' bundle.json."""
    folder.mkdir()
    monkeypatch.chdir(folder)
    run("export-best", "--study", study, "--storage", storage, "--ensemble", "3")
    run("export-best", "--study", study, "--storage", storage, "--ensemble", "1", "--out", "best-alone")
    averaged = json.loads((folder / "studies" / study / "export" / "bundle.json").read_text())
    alone = json.loads((folder / "best-alone" / "bundle.json").read_text())
    return averaged, alone


def check_exports(study: optuna.Study, averaged: dict, alone: dict, folder: Path) -> None:
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: (-t.value, t.number))
    assert all(t.user_attrs.get("weights_artifact") for t in complete)  # every completed trial uploaded
    assert [m["trial"] for m in averaged["members"]] == [t.number for t in complete[:3]]
    for trial in complete[:3]:  # downloaded here, beside where the trial kept them
        assert (folder / "studies" / study.study_name / trial.user_attrs["weights"]).is_file()
    # The best trial alone, rebuilt here from downloaded weights, scores on val exactly what it reported.
    assert alone["members"][0]["trial"] == complete[0].number
    for name, value in complete[0].user_attrs["val_scores"].items():
        assert alone["val_scores"][name] == pytest.approx(value, abs=1e-6), name


def test_three_workers_on_postgresql_keep_weights_in_s3_and_another_machine_exports(
    workdir, digits_dir, postgres_url, s3_env, monkeypatch, tmp_path
):
    store = f"s3://{BUCKET}"
    outputs = check_shared_study(
        start_workers(3, digits_dir, postgres_url, 6, "--artifacts", store, study="in-s3"),
        postgres_url,
        6,
        name="in-s3",
    )
    assert not any(SECRET in output or POSTGRES_PASSWORD in output for output in outputs)
    assert all("postgresql://automl:***@127.0.0.1" in output for output in outputs)
    study = optuna.load_study(study_name="in-s3", storage=open_storage(postgres_url))
    uploaded = {item["Key"] for item in s3_env.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert {t.user_attrs["weights_artifact"] for t in study.trials if t.state.name == "COMPLETE"} <= uploaded
    averaged, alone = export_elsewhere(tmp_path / "another-machine", monkeypatch, "in-s3", postgres_url)
    check_exports(study, averaged, alone, tmp_path / "another-machine")


def test_workers_on_a_journal_file_keep_weights_in_a_shared_folder(workdir, digits_dir, monkeypatch, tmp_path):
    shared = tmp_path / "shared-folder"
    shared.mkdir()
    storage = str(tmp_path / "journal" / "study.log")
    (tmp_path / "journal").mkdir()
    check_shared_study(
        start_workers(2, digits_dir, storage, 4, "--artifacts", str(shared), study="in-folder"),
        storage,
        4,
        name="in-folder",
    )
    study = optuna.load_study(study_name="in-folder", storage=open_storage(storage))
    assert len(list(shared.iterdir())) >= sum(t.state.name == "COMPLETE" for t in study.trials)
    # The resumed study remembers its store: a second run without --artifacts uploads there too.
    run(
        "search",
        digits_dir,
        "--study",
        "in-folder",
        "--storage",
        storage,
        "--trials",
        "5",
        "--epochs",
        "2",
        "-p",
        "image_size=8",
        "--precision",
        "float32",
    )
    study = optuna.load_study(study_name="in-folder", storage=open_storage(storage))
    assert study.trials[-1].user_attrs["weights_artifact"] and len(list(shared.iterdir())) >= 5
    # Moving a study to another store is refused rather than splitting its weights.
    other = tmp_path / "other-folder"
    other.mkdir()
    refused = run(
        "search", digits_dir, "--study", "in-folder", "--storage", storage, "--artifacts", str(other), expect=1
    )
    assert f"was created with artifacts '{shared}'" in refused.output
    averaged, alone = export_elsewhere(tmp_path / "another-machine", monkeypatch, "in-folder", storage)
    check_exports(study, averaged, alone, tmp_path / "another-machine")


def test_a_store_that_cannot_be_used_is_named_in_one_line_before_any_trial(workdir, digits_dir, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "automl-img-tests")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    unreachable = run("search", digits_dir, "--artifacts", f"s3://{BUCKET}", expect=1).output
    assert f"Error: cannot use artifact store s3://{BUCKET}: EndpointConnectionError" in unreachable
    with s3_server(check_credentials=True) as endpoint:  # a server that knows no access key
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        refused = run("search", digits_dir, "--artifacts", f"s3://{BUCKET}", expect=1).output
    assert f"Error: cannot use artifact store s3://{BUCKET}: ClientError" in refused and "InvalidAccessKeyId" in refused
    missing = run("search", digits_dir, "--artifacts", str(workdir / "not-mounted"), expect=1).output
    assert f"artifact store folder {workdir / 'not-mounted'} does not exist" in missing
    for output in (unreachable, refused, missing):
        assert len(output.strip().splitlines()) == 1 and SECRET not in output and "Traceback" not in output
    assert not (workdir / "studies" / "automl-img.db").exists()  # no study, no trial


def test_a_failed_upload_fails_its_trial_with_the_reason_not_the_search(workdir, digits_dir):
    shared = workdir / "shared-folder"
    shared.mkdir()
    search = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "automl_img",
            "search",
            str(digits_dir),
            "--artifacts",
            str(shared),
            "--trials",
            "3",
            "--epochs",
            "1",
            "--max-failures",
            "2",
            "-p",
            "image_size=8",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in search.stdout:
        lines.append(line)
        if '"event": "trial_end"' in line:  # the first trial uploaded; now the shared folder goes away
            shutil.move(shared, workdir / "unmounted")
            shared.write_text("not a folder any more")
            break
    lines += search.stdout.readlines()
    assert search.wait(timeout=300) == 1, "".join(lines)  # stopped by --max-failures, as for any failing trial
    summary = json.loads(lines[-1])
    assert summary["event"] == "summary" and summary["completed"] == 1 and summary["failed"] == 2
    trials = optuna.load_study(study_name="digits", storage=f"sqlite:///{workdir}/studies/automl-img.db").trials
    assert trials[0].state.name == "COMPLETE" and trials[0].user_attrs["weights_artifact"]
    for trial in trials[1:]:
        assert trial.state.name == "FAIL"
        assert trial.user_attrs["fail_reason"].startswith(f"uploading its weights to {shared} failed: ")
    assert (workdir / "unmounted" / trials[0].user_attrs["weights_artifact"]).is_file()


def test_wrong_password_is_a_one_line_error_without_the_password(workdir, digits_dir, postgres_url):
    wrong = postgres_url.replace(POSTGRES_PASSWORD, "not-" + POSTGRES_PASSWORD)
    result = run("search", digits_dir, "--storage", wrong, expect=1)
    assert "cannot open storage postgresql://automl:***@" in result.output
    assert POSTGRES_PASSWORD not in result.output and "Traceback" not in result.output


def test_workers_on_one_machine_share_the_trials_and_ctrl_c_stops_them_all(workdir, digits_dir):
    storage = f"sqlite:///{workdir}/studies/automl-img.db"
    search = [sys.executable, "-m", "automl_img", "search", str(digits_dir), "--workers", "2", "-p", "image_size=8"]
    done = subprocess.run([*search, "--trials", "2", "--epochs", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = optuna.load_study(study_name="digits", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2 and len({t.number for t in trials}) == 2
    assert len({t.user_attrs["worker"]["search_pid"] for t in trials}) == 1  # one search process...
    first, second = trials[0], trials[1]  # ...training two trials at once
    assert second.datetime_start < first.datetime_complete and first.datetime_start < second.datetime_complete
    assert "trials: 2 completed, 0 pruned, 0 failed" in done.stdout

    # Ctrl-C reaches the whole process group, as in a terminal: both trials in flight end, marked failed.
    running = subprocess.Popen(
        [*search, "--study", "stopped", "--trials", "2", "--epochs", "40", "--patience", "40"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # as from a terminal, even where pytest runs in the background of a script, whose shell ignores SIGINT
        # for its children
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        with contextlib.suppress(KeyError, optuna.exceptions.StorageInternalError):
            trials = optuna.load_study(study_name="stopped", storage=storage).trials
            if len([t for t in trials if t.state.name == "RUNNING" and len(t.intermediate_values) >= 2]) == 2:
                break
        time.sleep(0.5)
    else:
        running.kill()
        raise AssertionError(f"two trials never ran at once: {running.communicate()[0]}")
    os.killpg(running.pid, signal.SIGINT)
    output = running.communicate(timeout=120)[0]
    assert running.returncode == 130, output
    assert "search ended: interrupted (Ctrl-C)" in output and "Traceback" not in output
    trials = optuna.load_study(study_name="stopped", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"], [(t.number, t.state.name) for t in trials]
    assert all(t.user_attrs["fail_reason"] == "interrupted (Ctrl-C)" for t in trials)
