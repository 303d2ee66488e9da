"""Killed and interrupted searches: completed trials survive, the interrupted one is failed, resume works."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import run, trials_of

pytestmark = [pytest.mark.slow, pytest.mark.system]  # searches killed and interrupted mid-trial


def start_search(digits_dir, *extra: str) -> subprocess.Popen:
    """Two trials of 20 epochs each (fewer trials than a promotion needs: one level), so trial 1 runs long
    enough to be caught mid-training; with three, it would be a 4-epoch trial over in a few seconds."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "automl_img",
            "search",
            str(digits_dir),
            "--trials",
            "2",
            "--epochs",
            "20",
            "--patience",
            "20",
            "--seed",
            "0",
            "-p",
            "image_size=8",
            "--pruner",
            "none",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C reaches it even where pytest runs in the background of a script, whose shell ignores SIGINT
        # for its children (a search started so cannot be interrupted from a terminal either)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_trial_in_progress(number: int, timeout: float = 180) -> optuna.trial.FrozenTrial:
    """Block until trial ``number`` is running and has reported at least two epochs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            trials = trials_of("digits")
        except Exception:  # noqa: BLE001 - the study may not exist yet
            trials = []
        if (
            len(trials) > number
            and trials[number].state.name == "RUNNING"
            and len(trials[number].intermediate_values) >= 2
        ):
            return trials[number]
        time.sleep(0.3)
    raise AssertionError(f"trial {number} never got going")


def _forkserver_of(pid: int) -> bool:
    """Whether process ``pid`` has a child running multiprocessing's fork server (Linux's /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        with contextlib.suppress(OSError):
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                return True
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_mid_trial_loses_only_that_trial_and_the_rerun_completes(workdir, digits_dir):
    search = start_search(digits_dir)
    running = wait_for_trial_in_progress(1)
    search.kill()
    search.wait(timeout=30)
    trial_process = running.user_attrs["worker"]["pid"]
    deadline = time.time() + 10
    while alive(trial_process) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(trial_process), "the trial process outlived the killed search"
    before = trials_of("digits")
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]

    resumed = run("search", digits_dir, "--trials", 2, "--epochs", 2, "-p", "image_size=8", "--pruner", "none")
    assert "1 finished trial(s) so far" in resumed.output
    after = trials_of("digits")
    assert after[0].state.name == "COMPLETE" and after[0].value == before[0].value
    assert after[1].state.name == "FAIL" and "ended during the trial" in after[1].user_attrs["fail_reason"]
    assert [t.state.name for t in after[2:]] == ["COMPLETE"]  # the failed trial is not counted: one more runs


def test_ctrl_c_while_the_first_trial_process_starts_ends_without_a_traceback(workdir, digits_dir):
    """Ctrl-C reaches the whole process group: the search, the server its trial processes fork from (importing
    TensorFlow for the first seconds) and a trial process being started. Each printed a traceback there."""
    search = subprocess.Popen(
        [sys.executable, "-m", "automl_img", "search", str(digits_dir), "--trials", "1", "-p", "image_size=8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives a command
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while not _forkserver_of(search.pid) and search.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert _forkserver_of(search.pid), "the search started no fork server"
    time.sleep(1)  # it is importing TensorFlow (seconds), while the search waits for its first trial process
    os.killpg(search.pid, signal.SIGINT)
    output = search.communicate(timeout=60)[0]
    assert search.returncode == 130, output
    assert "interrupted (Ctrl-C)" in output and "Traceback" not in output and "KeyboardInterrupt" not in output, output


def test_ctrl_c_before_a_trial_starts_says_so_in_one_line(workdir, digits_dir, monkeypatch):
    """Ctrl-C while the study is being prepared (listing, decoding a large folder) is met where Python happens to
    be; here, as the console prints the study's first lines."""
    from automl_img.display import console

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(console.LiveDisplay, "study_ready", pressed)
    result = run("search", digits_dir, "--trials", 1, expect=130)
    assert "interrupted (Ctrl-C) before a trial started" in result.output and "Traceback" not in result.output
    assert trials_of("digits") == []


def test_ctrl_c_saves_everything_says_how_to_resume_and_the_study_stays_usable(workdir, digits_dir, tmp_path):
    search = start_search(digits_dir)
    wait_for_trial_in_progress(1)
    search.send_signal(signal.SIGINT)
    output, _ = search.communicate(timeout=60)
    assert search.returncode == 130, output
    assert "interrupted (Ctrl-C)" in output and "Run the same command again to resume" in output
    assert "Traceback" not in output
    trials = trials_of("digits")
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"]
    assert trials[1].user_attrs["fail_reason"] == "interrupted (Ctrl-C)"

    exported = run("export-best")
    assert "exported trial #0" in exported.output
    run("predict", "studies/digits/export", digits_dir / "5", "--csv", tmp_path / "p.csv")
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + len(list((digits_dir / "5").glob("*.png")))
