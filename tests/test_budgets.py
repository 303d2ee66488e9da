"""Budgets hold: the study's time limit stops training within a batch and never scores a cut trial, a search
does not start a trial that cannot fit in the time left, and the per-trial limits stop a trial."""

from __future__ import annotations

import time

import pytest
from helpers import run, trials_of

pytestmark = pytest.mark.slow  # real searches against the clock


def test_study_timeout_stops_training_within_seconds_and_does_not_score_the_cut_trial(workdir, digits_dir):
    started = time.time()
    result = run(
        "search",
        digits_dir,
        "--trials",
        2,
        "--epochs",
        500,
        "--patience",
        500,
        "--timeout",
        12,
        "-p",
        "image_size=8",
        "--pruner",
        "none",
    )
    elapsed = time.time() - started
    last = trials_of("digits")[-1]
    assert "time limit of 12 s reached" in result.output
    assert last.state.name == "FAIL" and last.user_attrs["stopped_by"] == "study time limit"
    assert last.user_attrs["time_limited"] and "cut by the study's time limit after" in last.user_attrs["fail_reason"]
    # Training stops within a batch of the limit; what remains is a trial process's start and end.
    assert elapsed < 12 + 20, elapsed


def test_a_search_does_not_start_a_trial_that_cannot_finish_in_the_time_left(workdir, digits_dir):
    run("search", digits_dir, "--trials", 1, "--epochs", 3, "-p", "image_size=8")
    result = run("search", digits_dir, "--trials", 5, "--epochs", 3, "-p", "image_size=8", "--timeout", 5)
    assert "would not fit a trial (the shortest took" in result.output
    assert len(trials_of("digits")) == 1  # nothing started, nothing lost
    assert "exported trial" in run("export-best").output


def test_trial_time_and_epoch_limits_stop_a_trial(workdir, digits_dir):
    run(
        "search",
        digits_dir,
        "--trials",
        1,
        "--epochs",
        500,
        "--patience",
        500,
        "--trial-timeout",
        4,
        "-p",
        "image_size=8",
    )
    run("search", digits_dir, "--study", "short", "--trials", 1, "--epochs", 3, "-p", "image_size=8")
    timed, short = trials_of("digits")[0], trials_of("short")[0]
    assert timed.user_attrs["stopped_by"] == "trial time limit" and len(timed.user_attrs["history"]) < 500
    assert short.user_attrs["stopped_by"] == "max epochs" and len(short.user_attrs["history"]) == 3
