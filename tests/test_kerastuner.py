"""KerasTuner code runs unchanged: its shipped application hypermodels from a plugin file, a tutorial's
``build(hp)``, a HyperModel subclass given to ``automl_img.search()``, and every word of the ``hp`` vocabulary
reaching the model it builds. A build's own compile is replaced by the recipe, and its compile-only parameters are
neither searched nor stored."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import keras_tuner
import optuna
import pytest
from helpers import load_study, run

import automl_img
from automl_img import hookimpl

APPLICATIONS = '''"""KerasTuner's application hypermodels, registered as they ship."""

import keras_tuner

from automl_img import hookimpl


@hookimpl
def register_architectures(register):
    register("hyper-resnet", keras_tuner.applications.HyperResNet)
    register("hyper-xception", keras_tuner.applications.HyperXception)
    register("hyper-efficientnet", keras_tuner.applications.HyperEfficientNet, channels=3)
'''


@pytest.fixture
def applications(workdir):
    (workdir / "plugins").mkdir()
    (workdir / "plugins" / "kt_apps.py").write_text(APPLICATIONS)
    return workdir


@pytest.mark.slow  # ResNet-50 and Xception, built at 32 px
@pytest.mark.parametrize(
    "family, narrowed, compile_only, count",
    [  # ResNet-50 once (its build and trace are the slow part), Xception twice: named once for the whole search
        ("hyper-resnet", ["-p", "conv4_depth=6"], ["hyper-resnet/learning_rate", "optimizer"], 1),
        ("hyper-xception", ["-p", "num_residual_blocks=2"], ["hyper-xception/learning_rate"], 2),
    ],
)
def test_keras_tuner_applications_search_and_export_from_a_plugin_file(
    applications, few_digits, family, narrowed, compile_only, count
):
    """The hypermodel's own compile choices are named once and neither searched nor stored."""
    search = run("search", few_digits, "--architecture", family, "--trials", count, "--epochs", 1,
                 "-p", "image_size=32", *narrowed, "--seed", 1, "--precision", "float32")  # fmt: skip
    trials = load_study("few-digits").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * count, [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    for trial in trials:
        assert trial.user_attrs["not_searched"] == compile_only
        assert not set(compile_only) & set(trial.params)
        assert "pooling" in trial.params and 3e-4 <= trial.params["learning_rate"] <= 5e-3  # the recipe's own
    assert search.output.count("not searched: " + ", ".join(compile_only)) == 1
    run("export-best", "--study", "few-digits", "--ensemble", 1)
    bundle = json.loads((applications / "studies" / "few-digits" / "export" / "bundle.json").read_text())
    best = max(trials, key=lambda t: (t.value, -t.number))
    assert [member["trial"] for member in bundle["members"]] == [best.number]
    # rebuilt from its stored parameters (float32 both times), it scores on val what the trial reported
    assert bundle["val_scores"]["accuracy"] == pytest.approx(best.user_attrs["val_scores"]["accuracy"], abs=1e-6)


def test_hyper_efficientnet_without_its_imagenet_download_stops_in_one_line(applications, few_digits, monkeypatch):
    """KerasTuner's HyperEfficientNet always loads ImageNet weights (it takes no ``weights=``); with no network,
    the search stops before any trial with the file to fetch and where to put it."""
    monkeypatch.setenv("KERAS_HOME", str(applications / "keras"))
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # a port nobody answers, where there is a network
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    result = run("search", few_digits, "--architecture", "hyper-efficientnet", "--trials", 1, "-p", "version=B0",
                 expect=1)  # fmt: skip
    assert (
        "hyper-efficientnet needs ImageNet weights and this machine cannot download them; fetch "
        "https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5 and put it in "
        f"{applications / 'keras' / 'models'}/" in result.output
    )
    assert "Traceback" not in result.output


def test_hyper_image_augment_is_refused_with_what_to_do_and_no_tensorflow_line(applications):
    """Run as a user does, in a fresh process: the plugins import KerasTuner (so TensorFlow), and no line of
    TensorFlow's start-up reaches the terminal."""
    (applications / "plugins" / "augment.py").write_text(
        "import keras_tuner\nfrom automl_img import hookimpl\n\n\n@hookimpl\ndef register_architectures(register):\n"
        "    register('augment', keras_tuner.applications.HyperImageAugment)\n"
    )
    refused = subprocess.run(
        [sys.executable, "-m", "automl_img", "plugins"], cwd=applications, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1
    assert refused.stdout + refused.stderr == (
        "Error: local file plugins/augment.py: architecture 'augment' is KerasTuner's HyperImageAugment, which builds "
        "augmentation layers, not a classifier. automl-img searches its own augmentation (rotation, zoom, shifts, "
        "flips, erasing) in the input pipeline, so exported models carry none of it; register a classifier, or give "
        "HyperImageAugment to one as its augmentation_model= (HyperEfficientNet takes one)\n"
    )


def tutorial_build(hp):
    """KerasTuner's getting-started ``build_model(hp)``: ``units``, ``dropout``, and its own compile with a
    ``learning_rate`` (a name the recipe has too)."""
    import keras
    from keras import layers

    model = keras.Sequential()
    model.add(layers.Flatten())
    model.add(layers.Dense(units=hp.Int("units", min_value=32, max_value=64, step=32), activation="relu"))
    if hp.Boolean("dropout"):
        model.add(layers.Dropout(rate=0.25))
    model.add(layers.Dense(10, activation="softmax"))
    learning_rate = hp.Float("learning_rate", min_value=1e-4, max_value=1e-2, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class Tutorial:
    @hookimpl
    def register_architectures(self, register):
        register("kt-tutorial", tutorial_build)


@pytest.mark.slow
def test_a_tutorial_build_hp_registers_as_it_is_and_its_compile_is_the_recipes(workdir, few_digits, register_plugin):
    register_plugin(Tutorial(), name="kt-tutorial")
    search = ("search", few_digits, "--architecture", "kt-tutorial", "--epochs", 1, "--seed", 0)
    output = run(*search, "--trials", 2, "-p", "units=64").output
    trials = load_study("few-digits").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        assert trial.params["units"] == 64 and "dropout" in trial.params
        assert trial.user_attrs["not_searched"] == ["kt-tutorial/learning_rate"]  # under its family: the recipe's
        assert "kt-tutorial/learning_rate" not in trial.params  # name is taken, by the recipe's own range:
        assert 3e-4 <= trial.params["learning_rate"] <= 5e-3
    assert "not searched: kt-tutorial/learning_rate, which the architecture declares for its own compile" in output
    refused = run(*search, "--study", "other", "--trials", 1, "-p", "kt-tutorial/learning_rate=0.001", expect=1)
    assert "parameter(s) kt-tutorial/learning_rate only configure the architecture's own compile" in refused.output
    with warnings.catch_warnings(record=True) as warned:  # the build's own optimizer is never made, so never saved
        warnings.simplefilter("always")
        run("export-best", "--study", "few-digits", "--ensemble", 1)
    assert not [w for w in warned if "Skipping variable loading for optimizer" in str(w.message)]


class TutorialHyperModel(keras_tuner.HyperModel):
    """A KerasTuner HyperModel subclass, as its documentation writes one: no shape given, it learns it on call."""

    def build(self, hp):
        import keras

        with hp.name_scope("block"):
            units = hp.Int("units", 8, 16, step=8)
        return keras.Sequential(
            [keras.layers.Flatten(), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(10, "softmax")]
        )


@pytest.mark.slow
def test_a_hypermodel_object_is_searched_by_the_python_api(workdir, few_digits):
    """Given as the architecture itself, as to a KerasTuner tuner: registered in-process under its name."""
    result = automl_img.search(few_digits, architecture=TutorialHyperModel(), trials=1, epochs=1, quiet=True)
    assert result.best_trial is not None and result.best_trial.params["block/units"] == 8  # the default first
    assert load_study("few-digits").user_attrs["automl_img_config"]["architecture"] == "tutorialhypermodel"


def every_word(hp, input_shape, num_classes):
    """Each word of KerasTuner's ``hp`` vocabulary decides one named layer."""
    import keras
    from keras import layers

    x = layers.Flatten()(inputs := keras.Input(input_shape))
    x = layers.Dense(hp.Int("units", 8, 64, step=8), name="stepped")(x)
    x = layers.Dense(hp.Int("wide", 4, 256, sampling="log"), name="logged")(x)
    x = layers.Dropout(hp.Float("rate", 0.0, 0.5, step=0.1), name="dropout")(x)
    x = layers.Dense(hp.Choice("width", [16, 32, 48], ordered=True), name="ordered")(x)
    if hp.Boolean("normalise"):
        x = layers.BatchNormalization(name="normalised")(x)
    x = layers.Activation(hp.Fixed("activation", "tanh"), name="fixed")(x)
    kind = hp.Choice("kind", ["plain", "extra"])
    with hp.conditional_scope("kind", "extra"):
        extra = hp.Int("extra_units", 4, 12)
    if kind == "extra":
        x = layers.Dense(extra, name="extra")(x)
    bias = hp.Boolean("use_bias", parent_name="kind", parent_values=["extra"])
    with hp.name_scope("head"):
        x = layers.Dense(hp.Int("units", 4, 8), use_bias=bias is not False, name="head")(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


def test_every_word_of_the_hp_vocabulary_reaches_the_built_model():
    from automl_img.models.training import build_model
    from automl_img.space import TrialHyperParameters

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    kinds = set()
    for _ in range(6):
        trial = study.ask()
        model = build_model(every_word, TrialHyperParameters(trial), 8, 1, 3)
        body = model.layers[-1]
        layer_names = {layer.name for layer in body.layers}
        p, kinds = trial.params, kinds | {trial.params["kind"]}
        assert body.get_layer("stepped").units == p["units"] and p["units"] % 8 == 0
        assert trial.distributions["units"].step == 8
        assert body.get_layer("logged").units == p["wide"] and trial.distributions["wide"].log
        assert body.get_layer("dropout").rate == pytest.approx(p["rate"])
        assert round(p["rate"] * 10, 6) == pytest.approx(round(p["rate"] * 10))  # on the step's grid
        assert body.get_layer("ordered").units == p["width"] in (16, 32, 48)
        assert ("normalised" in layer_names) == p["normalise"]
        assert body.get_layer("fixed").get_config()["activation"] == p["activation"] == "tanh"
        extra = p["kind"] == "extra"  # conditional_scope and parent_name: declared only under their parent
        assert ("extra" in layer_names) == extra == ("extra_units" in p) == ("use_bias" in p)
        if extra:
            assert body.get_layer("extra").units == p["extra_units"]
        assert body.get_layer("head").units == p["head/units"]  # name_scope
        assert body.get_layer("head").use_bias == p.get("use_bias", True)
    assert kinds == {"plain", "extra"}  # both branches were built
