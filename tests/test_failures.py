"""A trial's own failure is recorded with its reason and the search goes on; repeated failure stops it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from helpers import run

from automl_img import hookimpl
from automl_img.atomic import atomic_path
from automl_img.plugins import pm


def trials(study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage="sqlite:///studies/automl-img.db").trials


class FirstBuildFails:
    """An architecture plugin with a bug that bites once: its first build raises."""

    def __init__(self, counter: Path):
        self.counter = counter

    @hookimpl
    def register_architectures(self, register):
        register("first-build-fails", self.build)

    def build(self, hp, input_shape, num_classes):
        from automl_img.backend import keras

        calls = int(self.counter.read_text() or 0) if self.counter.exists() else 0
        self.counter.write_text(str(calls + 1))  # trials run in separate processes: count on disk
        if calls == 0:
            raise ValueError("plugin bug on the first call")
        inputs = keras.Input(input_shape)
        outputs = keras.layers.Dense(num_classes, activation="softmax")(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, outputs)


@pytest.fixture
def first_build_fails(tmp_path):
    plugin = FirstBuildFails(tmp_path / "calls")
    pm.register(plugin, name="first-build-fails")
    try:
        yield plugin
    finally:
        pm.unregister(plugin)


def test_a_raising_plugin_fails_one_trial_and_the_search_goes_on(workdir, digits_dir, first_build_fails):
    result = run("search", digits_dir, "--architecture", "first-build-fails", "--trials", 2, "--epochs", 1)
    assert "trial #0 failed: ValueError: plugin bug on the first call" in result.output
    assert "2 completed, 0 pruned, 1 failed" in result.output
    states = [t.state for t in trials("digits")]
    assert states == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    assert trials("digits")[0].user_attrs["fail_reason"] == "ValueError: plugin bug on the first call"


def test_diverging_trials_are_failed_with_the_reason_and_repeated_failure_stops(workdir, digits_dir):
    result = run("search", digits_dir, "--trials", 5, "--epochs", 3, "--max-failures", 2,
                 "-p", "learning_rate=1e9", "-p", "batch_norm=false", "-p", "image_size=8", expect=1)
    assert "stopped after 2 failed trials in a row; the last one: training diverged" in result.output
    recorded = trials("digits")
    assert [t.state for t in recorded] == [optuna.trial.TrialState.FAIL] * 2
    assert all("lower the learning rate" in t.user_attrs["fail_reason"] for t in recorded)


def test_atomic_write_leaves_the_old_file_or_the_new_one_never_half(tmp_path):
    target = tmp_path / "best.weights.h5"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as partial:
            partial.write_text("half of the new")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as partial:
        assert partial.name.endswith(".weights.h5")  # Keras picks the format from the suffix
        partial.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]
