"""Budgets hold: the study's time limit and the per-trial limits stop training at an epoch boundary,
and what was trained so far is kept and exportable."""

from __future__ import annotations

import time

import pytest
from helpers import run, trials_of

pytestmark = pytest.mark.slow  # real searches against the clock


def test_study_timeout_stops_within_an_epoch_and_keeps_the_model(workdir, digits_dir):
    started = time.time()
    result = run("search", digits_dir, "--trials", 2, "--epochs", 500, "--patience", 500, "--timeout", 12,
                 "-p", "image_size=8", "--pruner", "none")
    elapsed = time.time() - started
    trials = trials_of("digits")
    last = trials[-1]
    assert "time limit of 12 s reached" in result.output
    assert last.state.name == "COMPLETE" and last.user_attrs["stopped_by"] == "study time limit"
    epoch_seconds = last.user_attrs["seconds"] / len(last.user_attrs["history"])
    # No epoch starts after the limit; what remains is one epoch plus a trial process's start and end.
    assert elapsed < 12 + epoch_seconds + 20, (elapsed, epoch_seconds)
    assert "exported trial" in run("export-best").output


def test_trial_time_and_epoch_limits_stop_a_trial(workdir, digits_dir):
    run("search", digits_dir, "--trials", 1, "--epochs", 500, "--patience", 500, "--trial-timeout", 4,
        "-p", "image_size=8")
    run("search", digits_dir, "--study", "short", "--trials", 1, "--epochs", 3, "-p", "image_size=8")
    timed, short = trials_of("digits")[0], trials_of("short")[0]
    assert timed.user_attrs["stopped_by"] == "trial time limit" and len(timed.user_attrs["history"]) < 500
    assert short.user_attrs["stopped_by"] == "max epochs" and len(short.user_attrs["history"]) == 3
