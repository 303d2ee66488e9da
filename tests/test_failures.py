"""A trial's own failure is recorded with its reason and the search goes on; repeated failure stops it."""

from __future__ import annotations

import optuna
import pytest
from helpers import run, trials_of

from automl_img import hookimpl
from automl_img.atomic import atomic_path


class BuggyPlugins:
    """Architecture plugins with bugs: one raises at its default width, one's model gives NaN in training."""

    @hookimpl
    def register_architectures(self, register):
        register("buggy-at-default", self.buggy_at_default)
        register("outputs-nan", self.outputs_nan)

    @staticmethod
    def buggy_at_default(hp, input_shape, num_classes):
        from automl_img.tf_runtime import keras

        units = hp.Int("units", 1, 1000, default=1)
        if units == 1:  # the first trial is every parameter's default: it meets the bug
            raise ValueError("plugin bug with units=1 [see its docs]")  # brackets: printed as they are
        inputs = keras.Input(input_shape)
        hidden = keras.layers.Dense(units, activation="relu")(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(hidden))

    @staticmethod
    def outputs_nan(hp, input_shape, num_classes):
        from automl_img.tf_runtime import keras

        class NaNWhileTraining(keras.layers.Layer):
            def call(self, x, training=None):
                return x * float("nan") if training else x

        inputs = keras.Input(input_shape)
        hidden = NaNWhileTraining()(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(hidden))


@pytest.fixture
def buggy_plugins(register_plugin):
    return register_plugin(BuggyPlugins(), name="buggy-plugins")


@pytest.mark.slow
def test_a_raising_plugin_fails_one_trial_and_the_search_goes_on(workdir, digits_dir, buggy_plugins):
    result = run("search", digits_dir, "--architecture", "buggy-at-default", "--trials", 2, "--epochs", 1, "--seed", 0)
    assert "trial #0 failed: ValueError: plugin bug with units=1 [see its docs]" in result.output
    assert "2 completed, 0 pruned, 1 failed" in result.output
    recorded = trials_of("digits")
    assert [t.state for t in recorded] == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    assert recorded[0].user_attrs["fail_reason"] == "ValueError: plugin bug with units=1 [see its docs]"
    assert recorded[0].params["units"] == 1 and all(t.params["units"] != 1 for t in recorded[1:])


@pytest.mark.slow
def test_diverging_trials_are_failed_with_the_reason_and_repeated_failure_stops(workdir, digits_dir, buggy_plugins):
    result = run(
        "search",
        digits_dir,
        "--architecture",
        "outputs-nan",
        "--trials",
        5,
        "--epochs",
        3,
        "--max-failures",
        2,
        "-p",
        "image_size=8",
        expect=1,
    )
    assert "stopped after 2 failed trials in a row; the last one: training diverged" in result.output
    recorded = trials_of("digits")
    assert [t.state for t in recorded] == [optuna.trial.TrialState.FAIL] * 2
    assert all("lower the learning rate" in t.user_attrs["fail_reason"] for t in recorded)


def test_atomic_write_leaves_the_old_file_or_the_new_one_never_half(tmp_path):
    target = tmp_path / "best.weights.h5"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_text("half of the new")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as partial:
        assert partial.name.endswith(".weights.h5")  # Keras picks the format from the suffix
        partial.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]
