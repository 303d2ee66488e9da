"""The hp vocabulary (KerasTuner names, Optuna underneath) and the user's overrides."""

from __future__ import annotations

import optuna
import pytest

from automl_img.errors import StudyError
from automl_img.space import (
    DefaultHyperParameters,
    Range,
    StoredHyperParameters,
    TrialHyperParameters,
    default_image_sizes,
    load_overrides,
    parse_override,
    sample_image_size,
    sample_training_params,
)


def declare(hp):
    kind = hp.Choice("kind", ["a", "b"])
    with hp.conditional_scope("kind", "a"):
        only_a = hp.Int("only_a", 1, 4)
    return {
        "units": hp.Int("units", 8, 64, step=8),
        "rate": hp.Float("rate", 1e-4, 1e-1, sampling="log"),
        "flag": hp.Boolean("flag"),
        "fixed": hp.Fixed("fixed", 3),
        "kind": kind,
        "only_a": only_a,
    }


def test_trial_values_are_optuna_params_and_rebuild_from_storage():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        values = declare(TrialHyperParameters(trial))
        assert values["units"] % 8 == 0 and 8 <= values["units"] <= 64
        assert 1e-4 <= values["rate"] <= 1e-1 and values["fixed"] == 3
        assert (values["only_a"] is None) == (values["kind"] != "a")  # inactive, as in KerasTuner
        study.tell(trial, 0.5)
        assert declare(StoredHyperParameters(study.trials[-1].params)) == values


def test_overrides_fix_choose_and_narrow():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    overrides = {"units": 16, "kind": ["b"], "rate": Range(0.01, 0.02)}
    for _ in range(5):
        hp = TrialHyperParameters(study.ask(), overrides)
        values = declare(hp)
        assert values["units"] == 16 and values["kind"] == "b" and 0.01 <= values["rate"] <= 0.02
        assert hp.unused_overrides() == []
    assert TrialHyperParameters(study.ask(), {"nonsense": 1}).unused_overrides() == ["nonsense"]


def test_missing_stored_value_says_the_architecture_changed():
    with pytest.raises(StudyError, match="architecture changed"):
        StoredHyperParameters({}).Int("units", 1, 2)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dropout=0.4", ("dropout", 0.4)),
        ("image_size=16,28", ("image_size", [16, 28])),
        ("learning_rate=1e-4..1e-2", ("learning_rate", Range(1e-4, 1e-2))),
        ("horizontal_flip=false", ("horizontal_flip", False)),
        ("activations=relu", ("activations", "relu")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["dropout", "=3", "x=", "lr=0.1..0.01", "lr=a..b"])
def test_bad_override_names_the_text(text):
    with pytest.raises(StudyError, match="cannot read"):
        parse_override(text)


def test_config_file(tmp_path):
    config = tmp_path / "study.toml"
    config.write_text("[params]\nimage_size = [16, 24]\ndropout = 0.3\nlearning_rate = {min = 0.001, max = 0.01}\n")
    assert load_overrides(config) == {"image_size": [16, 24], "dropout": 0.3, "learning_rate": Range(0.001, 0.01)}
    config.write_text("[search]\nx = 1\n")
    with pytest.raises(StudyError, match="only \\[params\\]"):
        load_overrides(config)


def test_image_size_candidates_never_upscale_by_default():
    assert default_image_sizes(8) == [8]
    assert default_image_sizes(28) == [16, 24, 28]
    assert default_image_sizes(32) == [16, 24, 32]
    assert default_image_sizes(3000) == [64, 96, 128, 192, 256]


@pytest.mark.parametrize(
    ("native", "overrides", "first"),
    [
        (28, {}, 28),  # small images: trial 0 at their own size
        (8, {}, 8),
        (3000, {}, 64),  # 1024+ px X-rays: trial 0 at 64 px, not 256 (16x the cost)
        (3000, {"image_size": [128, 256]}, 128),  # every candidate large: the cheapest of them
    ],
)
def test_first_trial_trains_at_a_cheap_image_size(native, overrides, first):
    assert sample_image_size(DefaultHyperParameters(overrides), default_image_sizes(native)) == first


def test_recipe_values_lie_inside_the_training_space():
    recipe = {
        "image_size": 28,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "label_smoothing": 0.0,
        "rotation": 30.0,
        "zoom": 0.2,
        "width_shift": 0.1,
        "height_shift": 0.1,
        "horizontal_flip": True,
        "erasing": 0.0,
    }
    params = sample_training_params(StoredHyperParameters(recipe), 28)
    assert params.augments and params.rotation == 30.0
    study = optuna.create_study()
    trial = study.ask()
    hp = TrialHyperParameters(trial, {k: v for k, v in recipe.items()})
    sample_training_params(hp, sample_image_size(hp, [16, 28]))
    assert trial.params == recipe


def test_trials_stored_before_the_recipe_parameters_existed_rebuild_as_they_trained():
    """A study from before weight decay, label smoothing, erasing, the head and depth choices still exports
    and resumes: its trials read no weight decay, no smoothing, no erasing, the Flatten head and the one
    convolution per block they were trained with."""
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.tf_runtime import keras

    old = {
        "image_size": 16,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "rotation": 5.0,
        "zoom": 0.05,
        "width_shift": 0.05,
        "height_shift": 0.05,
        "horizontal_flip": False,
        "activations": "relu",
        "batch_norm": True,
        "filters_1": 32,
        "filters_2": 64,
        "filters_3": 128,
        "filters_4": 128,
        "dropout": 0.3,
        "dense_units": 256,
    }
    hp = StoredHyperParameters(old)
    params = sample_training_params(hp, 16)
    assert (params.weight_decay, params.label_smoothing, params.erasing) == (0.0, 0.0, 0.0)
    model = build_blog_cnn(hp, (16, 16, 1), 10)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == 4
    assert any(isinstance(layer, keras.layers.Flatten) for layer in model.layers)
    assert not any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in model.layers)
    with pytest.raises(StudyError, match="no value for 'dropout'"):
        build_blog_cnn(StoredHyperParameters({k: v for k, v in old.items() if k != "dropout"}), (16, 16, 1), 10)


def declare_scoped(hp):
    """KerasTuner's name_scope: names nest, and get() and conditions inside a scope are scoped too."""
    with hp.name_scope("block1"):
        units = hp.Int("units", 8, 32, step=8)
        kind = hp.Choice("kind", ["conv", "dense"])
        with hp.conditional_scope("kind", ["conv"]):
            kernel = hp.Choice("kernel", [3, 5])
        seen = hp.get("units")
    with hp.name_scope("block2"), hp.name_scope("inner"):
        rate = hp.Float("rate", 0.0, 0.5)
    return {"units": units, "kind": kind, "kernel": kernel, "seen": seen, "rate": rate}


def test_name_scopes_nest_and_scope_get_and_conditions():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(6):
        trial = study.ask()
        values = declare_scoped(TrialHyperParameters(trial))
        assert set(trial.params) <= {"block1/units", "block1/kind", "block1/kernel", "block2/inner/rate"}
        assert values["units"] == values["seen"] == trial.params["block1/units"]
        assert (values["kernel"] is None) == (values["kind"] != "conv")  # the condition named the scoped kind
        study.tell(trial, 0.5)
        assert declare_scoped(StoredHyperParameters(study.trials[-1].params)) == values
    fresh = optuna.create_study()  # overrides hold for a whole study: a parameter keeps one distribution
    overridden = TrialHyperParameters(fresh.ask(), {"block1/units": 16, "block2/inner/rate": Range(0.1, 0.2)})
    values = declare_scoped(overridden)
    assert values["units"] == 16 and 0.1 <= values["rate"] <= 0.2 and overridden.unused_overrides() == []


def test_an_architecture_keeps_its_names_unless_the_search_declares_them_too():
    from automl_img.space import ArchitectureHyperParameters

    hp = DefaultHyperParameters()
    view = ArchitectureHyperParameters(hp, "kt")
    view.Choice("learning_rate", [1e-2, 1e-3])  # the recipe's name: kept apart
    view.Int("units", 8, 16)  # its own name: as declared
    with view.name_scope("head"):
        view.Float("learning_rate", 1e-4, 1e-2)  # scoped: no clash possible, kept as declared
    sample_training_params(hp, 8)
    assert {"kt/learning_rate", "units", "head/learning_rate", "learning_rate"} <= set(hp.values)
    assert view.get("learning_rate") == 1e-2 and hp.get("learning_rate") == 2e-3
