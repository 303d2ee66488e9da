"""The Python API (automl_img.search, export_best, load_bundle, report, show, register_plugin): the commands'
defaults and errors, predictions on arrays and PIL images equal to those on files, and plugins that live only
in ``__main__`` reaching the trial processes by value. One small study, made once through the API itself."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from helpers import load_study, studies_at
from PIL import Image

import automl_img
from automl_img.errors import AutomlImgError, DataError, PluginError, StudyError
from automl_img.plugins import PluginSource, pm
from automl_img.searching.options import SearchOptions


@pytest.fixture(scope="module")
def searched_once(tmp_path_factory, few_digits):
    with studies_at(tmp_path_factory.mktemp("api") / "studies") as studies:
        result = automl_img.search(few_digits, trials=1, epochs=2, seed=0, quiet=True)
        exported = result.export_best(ensemble=1)
    return studies, result, exported


@pytest.fixture
def searched(searched_once, use_studies):
    use_studies(searched_once[0])
    return searched_once


def test_search_returns_the_study_its_best_trial_and_scores(searched):
    _, result, _ = searched
    [trial] = load_study("few-digits").trials
    assert result.study == "few-digits" and result.objective == "accuracy" and not result.interrupted
    assert result.counts.completed == 1 and result.stopped_because.startswith("the study has 1 finished")
    assert result.best_trial.number == 0 and result.best_value == pytest.approx(trial.value)
    assert result.best_params == trial.params
    assert result.optuna_study.best_trial.number == 0 and [t.number for t in result.trials()] == [0]
    page = result._repr_html_()
    assert f"val accuracy {trial.value:.4f}" in page and "<table>" in page and "max epochs" in page
    # A study searched before, opened by name, is the same study.
    shown = automl_img.show("few-digits")
    assert shown.best_value == result.best_value and shown.counts == result.counts
    assert [row.name for row in automl_img.studies()] == ["few-digits"]


def test_export_best_writes_a_bundle_that_predicts_what_the_command_line_predicts(searched, few_digits):
    studies, _result, exported = searched
    assert exported.folder == studies / "few-digits" / "export" and (exported.folder / "model.keras").is_file()
    assert [m.trial for m in exported.manifest.members] == [0]
    assert 0 <= exported.test.accuracy <= 1 and "test accuracy" in repr(exported)
    model = automl_img.load_bundle(exported.folder)
    sevens = sorted((few_digits / "7").glob("*.png"))
    table = model.predict(few_digits / "7")
    assert list(table["image"]) == [str(p) for p in sevens]
    assert list(table.columns[:4]) == ["image", "class", "probability", "set"]
    assert list(table.columns[4:]) == model.class_names
    files, _ = model.predict_files(sevens)
    assert list(table["class"]) == [p.class_name for p in files]
    assert np.allclose(table[model.class_names].to_numpy(), [list(p.probabilities.values()) for p in files])
    assert list(table["set"]) == ["|".join(p.prediction_set) for p in files]
    assert all(row["class"] in row["set"].split("|") for _, row in table.iterrows())


def test_arrays_and_pil_images_predict_exactly_as_their_files(searched, few_digits, tmp_path):
    model = searched[2].load()
    files = sorted((few_digits / "3").glob("*.png"))[:4]
    gray = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]  # (8, 8) uint8, as the PNGs hold them
    expected = model.predict(files)[model.class_names].to_numpy()

    def probabilities(images):
        return model.predict(images)[model.class_names].to_numpy()

    assert np.array_equal(probabilities(np.stack(gray)), expected)  # a (n, h, w) batch
    assert np.array_equal(probabilities([g[:, :, None] for g in gray]), expected)  # (h, w, 1) each
    assert np.array_equal(probabilities(np.stack([np.dstack([g] * 3) for g in gray])), expected)  # RGB batch
    assert np.array_equal(probabilities([Image.open(f) for f in files]), expected)
    assert np.array_equal(probabilities(np.stack(gray).astype(np.float32) / 255), expected)  # floats in [0, 1]
    # Transparent pixels are white, as for an RGBA file; uint16 keeps its full range, as for a 16-bit PNG.
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = (0, 0, 0, 255)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    assert np.array_equal(probabilities(rgba), probabilities(tmp_path / "rgba.png"))
    assert np.array_equal(probabilities(Image.fromarray(rgba, "RGBA")), probabilities(tmp_path / "rgba.png"))
    deep = gray[0].astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert np.array_equal(probabilities(deep), probabilities(tmp_path / "deep.png"))
    # Mixed input keeps its order; in-memory images are named by their position.
    mixed = model.predict([gray[0], files[1], Image.open(files[2])])
    assert list(mixed["image"]) == ["array 0", str(files[1]), "array 2"]
    assert np.array_equal(mixed[model.class_names].to_numpy(), expected[:3])


def test_predict_says_what_is_wrong_with_an_input(searched, few_digits, tmp_path):
    model = searched[2].load()
    for bad, words in (
        (np.zeros((2, 3, 4, 5, 6), np.uint8), "got shape (2, 3, 4, 5, 6)"),
        (np.zeros((2, 8, 8, 7), np.uint8), "got shape (2, 8, 8, 7)"),
        (np.array([["a"]]), "must hold numbers"),
        (np.zeros((0, 8), np.uint8), "empty"),
        ({"image": 1}, "cannot classify a dict"),
        ([], "no images given"),
        (tmp_path / "missing.png", "does not exist"),
    ):
        with pytest.raises(DataError, match=words.replace("(", r"\(").replace(")", r"\)")):
            model.predict(bad)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    good = sorted((few_digits / "5").glob("*.png"))[0]
    with pytest.warns(UserWarning, match="skipped unreadable 1 file.*broken.png"):
        table = model.predict([tmp_path / "broken.png", good])
    assert list(table["image"]) == [str(good)] and table.attrs["unreadable"][0][0] == str(tmp_path / "broken.png")


def test_the_api_refuses_what_the_command_line_refuses(searched, few_digits, workdir):
    for call, error, words in (
        (lambda: automl_img.search(few_digits, trials=0), AutomlImgError, "trials=0 is not allowed"),
        (lambda: automl_img.search(few_digits, epochs=0), AutomlImgError, "epochs=0 is not allowed"),
        (lambda: automl_img.search(few_digits, workers=1.5), AutomlImgError, "workers=1.5 is not allowed; use a whole"),
        (lambda: automl_img.search(few_digits, objective="speed"), StudyError, "unknown objective 'speed'"),
        (lambda: automl_img.search(workdir / "nowhere"), DataError, "nowhere"),
        (
            lambda: automl_img.search(few_digits, params={"dropout": {"low": 0.1}}),
            StudyError,
            "params: dropout must be a value, a list, or",
        ),
        (lambda: automl_img.search(few_digits, params={"dropout": object()}), StudyError, "params: dropout"),
        (lambda: automl_img.search(few_digits, architecture="resnet-9000"), PluginError, "unknown architecture"),
        (lambda: automl_img.export_best("no-such-study"), StudyError, "no-such-study"),
        (lambda: automl_img.export_best("few-digits", ensemble=0), StudyError, "--ensemble must be 1 or more"),
        (lambda: automl_img.load_bundle(workdir / "nothing"), AutomlImgError, "is not a folder"),
        (lambda: automl_img.load_bundle(searched[2].folder, format="onnx"), AutomlImgError, "has no onnx model"),
    ):
        with pytest.raises(error, match=words):
            call()
    assert [row.name for row in automl_img.studies()] == ["few-digits"]  # no study was made by a refused call


def test_search_takes_every_option_of_the_command_with_its_default():
    parameters = inspect.signature(automl_img.search).parameters
    renamed = {"source": "data_dir", "overrides": "params"}
    for option in dataclasses.fields(SearchOptions):
        parameter = parameters[renamed.get(option.name, option.name)]
        default = None if option.name == "overrides" else option.default  # params: None for no overrides
        assert parameter.default == default, option.name


class _Unsendable:
    """A plugin holding what no process can copy: a lock."""

    def __init__(self):
        self.lock = threading.Lock()

    @automl_img.hookimpl
    def register_architectures(self, register):
        pass


def test_a_plugin_that_cannot_reach_the_trials_is_refused_before_the_study_is_made(few_digits, workdir):
    name = automl_img.register_plugin(_Unsendable())
    try:
        with pytest.raises(PluginError, match=r"cannot be sent to the trial processes.*move the plugin into a \.py"):
            automl_img.search(few_digits, trials=1, epochs=1, study="refused", quiet=True)
        assert not (workdir / "studies").exists()  # refused before the storage was opened
    finally:
        automl_img.unregister_plugin(name)
    assert pm.get_plugin(name) is None


# Written as a notebook cell would be: functions and a class that exist only in ``__main__``.
_MAIN_PLUGIN = """
import automl_img

def build_small(hp, input_shape, num_classes):
    import keras
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))

class CellPlugin:
    @automl_img.hookimpl
    def register_architectures(self, register):
        register("from-a-cell", build_small)

name = automl_img.register_plugin(CellPlugin())
assert automl_img.register_plugin(CellPlugin()) == name  # a cell run twice replaces its plugin
"""


@pytest.mark.slow  # a fresh interpreter imports TensorFlow
def test_a_plugin_defined_in_main_reaches_a_fresh_process_by_value(tmp_path):
    script = tmp_path / "cell.py"
    script.write_text(
        _MAIN_PLUGIN
        + """
import pickle, sys
from automl_img.plugins import load_plugins
registry = load_plugins(third_party=False)
assert registry.get("architecture", "from-a-cell").source == "registered in-process"
sys.stdout.buffer.write(pickle.dumps(registry.plugin_source))
"""
    )
    shipped = subprocess.run([sys.executable, str(script)], capture_output=True, check=True, cwd=tmp_path).stdout
    # A new interpreter has no CellPlugin anywhere: what arrives must carry the class and the function themselves.
    check = """
import pickle, sys
source = pickle.loads(sys.stdin.buffer.read())
model = source.load().architecture("from-a-cell")(None, (8, 8, 1), 3)
print(model.output_shape)
"""
    built = subprocess.run([sys.executable, "-c", check], input=shipped, capture_output=True, cwd=tmp_path)
    assert built.returncode == 0, built.stderr.decode()
    assert built.stdout.decode().strip() == "(None, 3)"
    # Bytes that no longer unpickle (the plugin's module is gone) give one line, not a traceback in a child.
    broken = PluginSource(shipped=pickle.dumps([("gone", "x")])[:-3])
    with pytest.raises(PluginError, match="could not be rebuilt in the trial process"):
        broken.load()


def test_trial_starts_from_several_threads_leave_the_main_module_in_place():
    """--workers start trial processes from several threads at once; each hides ``__main__`` while its child starts,
    and the caller's own module (a notebook's namespace) is in place once they are done."""
    from automl_img.searching.runners import _main_module_left_out

    main = sys.modules["__main__"]
    seen = []

    def start() -> None:
        with _main_module_left_out():
            seen.append(sys.modules["__main__"] is main)
            time.sleep(0.2)  # a child starting; another thread's start comes in meanwhile

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [False, False] and sys.modules["__main__"] is main
