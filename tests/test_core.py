"""The core path a user walks: search -> export-best -> predict, on real PNG files."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from helpers import REPO, load_study, run, studies_at

import automl_img
from automl_img import hookimpl

pytestmark = pytest.mark.slow  # every test here runs a real search; test_smoke.py is the fast lane's


@pytest.fixture(scope="module")
def searched_once(tmp_path_factory, digits_dir):
    """One short, seeded search on the digits and its export, shared by the tests below."""
    studies = tmp_path_factory.mktemp("searched") / "studies"
    with studies_at(studies):
        search = run("search", digits_dir, "--trials", 4, "--epochs", 9, "--seed", 7)
        export = run("export-best", "--ensemble", 3)
    return {
        "studies": studies,
        "search": search.output,
        "export": export.output,
        "bundle": studies / "digits" / "export",
    }


@pytest.fixture
def searched(searched_once, use_studies):
    """The shared search, with this test's CLI calls and ``load_study`` pointed at its studies folder."""
    use_studies(searched_once["studies"])
    return searched_once


def test_short_search_and_export_reach_090_test_accuracy(searched):
    bundle = json.loads((searched["bundle"] / "bundle.json").read_text())
    counts = re.search(r"^trials: (\d+) completed, (\d+) pruned, (\d+) failed$", searched["search"], re.M)
    assert counts, searched["search"]
    completed, pruned, failed = map(int, counts.groups())
    assert completed + pruned == 4 and failed == 0, counts.group(0)
    assert completed >= 3  # the export averages the 3 best completed trials
    states = [t.state for t in load_study().trials]
    assert (
        states.count(optuna.trial.TrialState.COMPLETE),
        states.count(optuna.trial.TrialState.PRUNED),
        len(states),
    ) == (completed, pruned, 4)
    assert bundle["test"]["images"] >= 250  # 15% of 1,797, stratified
    assert bundle["test"]["accuracy"] >= 0.90, bundle["test"]
    assert set(bundle["test"]["per_class"]) == {str(d) for d in range(10)}
    matrix = np.array(bundle["test"]["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == bundle["test"]["images"]
    assert f"accuracy {bundle['test']['accuracy']:.4f}" in searched["export"]


def test_export_calibrates_on_val_and_its_sets_cover_test_as_reported(searched):
    calibration = json.loads((searched["bundle"] / "bundle.json").read_text())["calibration"]
    assert calibration["fitted_on"] == "val" and calibration["coverage"] == 0.9
    rows = list(csv.DictReader((searched["bundle"] / "test_predictions.csv").open()))
    assert calibration["test_images"] == len(rows)
    covered = [row["true_class"] in row["prediction_set"].split("|") for row in rows]
    assert np.mean(covered) == pytest.approx(calibration["test_coverage"])
    assert np.mean([row["prediction_set"].count("|") + 1 for row in rows]) == pytest.approx(
        calibration["mean_set_size"]
    )
    assert f"test coverage {calibration['test_coverage']:.4f}" in searched["export"]


def test_bundle_model_averages_the_best_epochs_of_the_best_trials(searched, digits_dir):
    """Reloaded with Keras alone, the bundle predicts the mean of the best trials' own checkpoints."""
    from automl_img.data import load_image
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import training
    from automl_img.space import StoredHyperParameters, sample_training_params
    from automl_img.tf_runtime import keras

    study = load_study()
    best = study.best_trial
    completed = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: -t.value)
    bundle = json.loads((searched["bundle"] / "bundle.json").read_text())
    assert bundle["trial"] == best.number and bundle["best_epoch"] == best.user_attrs["best_epoch"]
    assert [m["trial"] for m in bundle["members"]] == [t.number for t in completed[:3]]
    assert bundle["val_scores_stored"] == best.user_attrs["val_scores"]

    model = keras.saving.load_model(searched["bundle"] / "model.keras", safe_mode=True)
    size = bundle["preprocessing"]["image_size"]
    images = np.stack([load_image(path, size, 1) for path in sorted(digits_dir.glob("*/*.png"))[::40]])
    members = []
    for trial in completed[:3]:
        rebuilt = training.build_model(build_blog_cnn, StoredHyperParameters(trial.params), size, 1, 10)
        rebuilt.load_weights(searched["studies"] / "digits" / trial.user_attrs["weights"])
        rebuilt = training.as_trained(rebuilt, sample_training_params(StoredHyperParameters(trial.params), size))
        members.append(rebuilt.predict(images, verbose=0))
    np.testing.assert_allclose(model.predict(images, verbose=0), np.mean(members, axis=0), atol=1e-6)


def test_by_default_the_export_keeps_a_member_only_where_it_does_not_lower_val(searched, tmp_path):
    """Without --ensemble: the best trial, then each of the next two best only if the average scores at least as
    well on val with it; the others are named as left out."""
    study = load_study()
    completed = sorted(
        (t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: (-t.value, t.number)
    )
    exported = run("export-best", "--out", tmp_path / "chosen").output
    bundle = json.loads((tmp_path / "chosen" / "bundle.json").read_text())
    members = [m["trial"] for m in bundle["members"]]
    assert members[0] == completed[0].number and len(completed) >= 3
    assert sorted(members + bundle["left_out"]) == sorted(t.number for t in completed[:3])
    assert members == [t.number for t in completed[:3] if t.number in members]  # best first
    assert bundle["val_scores"]["accuracy"] >= completed[0].user_attrs["val_scores"]["accuracy"] - 1e-9
    left_out = ", ".join(f"#{trial}" for trial in bundle["left_out"])
    assert (f"({left_out} left out: each lowered the average's val score)" in exported) == bool(left_out), exported


def test_forward_selection_keeps_members_that_raise_the_average_and_drops_those_that_lower_it():
    from automl_img.outputs.export import select_members

    labels = np.array([0, 0, 1, 1])
    best = np.array([[0.9, 0.1], [0.6, 0.4], [0.4, 0.6], [0.55, 0.45]])  # 3 of 4 right
    wrong = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.9, 0.1]])  # 1 of 4: the average would lose two
    mends = np.array([[0.6, 0.4], [0.6, 0.4], [0.4, 0.6], [0.2, 0.8]])  # all right: the average gets all 4
    assert select_members([best, wrong, mends], labels, "accuracy") == [0, 2]
    assert select_members([best, best], labels, "accuracy") == [0, 1]  # a tie keeps it
    assert select_members([best, wrong], labels, "loss") == [0]  # smaller is better
    assert select_members([best, mends], labels, "loss") == [0, 1]


def test_best_trials_at_different_sizes_are_averaged_in_one_model(workdir, digits_dir, tmp_path):
    """Members trained at 8 and 16 px: the bundle takes 16 px and shrinks inside the model to exactly the
    pixels OpenCV gives the 8 px member, so it predicts the mean of the members on their own decodes."""
    import cv2

    from automl_img.data import load_image
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import training
    from automl_img.space import StoredHyperParameters, sample_training_params
    from automl_img.tf_runtime import keras

    data = tmp_path / "large"  # 16 px digits: the 8 px member's pixels come from a shrink, as in a real study
    for digit in "0123":
        (data / digit).mkdir(parents=True)
        for file in sorted((digits_dir / digit).glob("*.png"))[:60]:
            image = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(data / digit / file.name), cv2.resize(image, (16, 16), interpolation=cv2.INTER_CUBIC))
    run("search", data, "--trials", 3, "--epochs", 2, "--seed", 2, "-p", "image_size=8,16", "--sampler", "random")
    study = load_study("large")
    sizes = {t.number: t.params["image_size"] for t in study.trials}
    assert set(sizes.values()) == {8, 16}, sizes  # the seed gives both sizes; a new Optuna may need another seed

    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "automl_img",
            "export-best",
            "--study",
            "large",
            "--ensemble",
            "3",
            "--format",
            "savedmodel,tflite,onnx",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert exported.returncode == 0 and exported.stderr == "", exported.stderr  # TensorFlow's notes: export.log
    assert (workdir / "studies" / "large" / "export" / "export.log").is_file()
    bundle = json.loads((workdir / "studies" / "large" / "export" / "bundle.json").read_text())
    assert bundle["preprocessing"]["image_size"] == 16
    assert set(bundle["formats"]) == {"keras", "savedmodel", "tflite", "onnx"}
    for name, check in bundle["formats"].items():  # the shrink is plain matrix products: every format has them
        assert check["ok"] and check["same_class_fraction"] == 1.0, (name, check)  # and dropout stays off
    assert "disagree" not in exported.stdout
    assert sorted(m["image_size"] for m in bundle["members"]) == sorted(sizes.values())

    model = keras.saving.load_model(workdir / "studies" / "large" / "export" / "model.keras", safe_mode=True)
    files = sorted(data.glob("*/*.png"))[::5]
    members = []
    for trial in study.trials:
        size = sizes[trial.number]
        rebuilt = training.build_model(build_blog_cnn, StoredHyperParameters(trial.params), size, 1, 4)
        rebuilt.load_weights(workdir / "studies" / "large" / trial.user_attrs["weights"])
        rebuilt = training.as_trained(rebuilt, sample_training_params(StoredHyperParameters(trial.params), size))
        members.append(rebuilt.predict(np.stack([load_image(f, size, 1) for f in files]), verbose=0))
    averaged = model.predict(np.stack([load_image(f, 16, 1) for f in files]), verbose=0)
    np.testing.assert_allclose(averaged, np.mean(members, axis=0), atol=1e-5)

    alone = run("export-best", "--study", "large", "--ensemble", 1, "--format", "tflite", "--out", tmp_path / "one")
    assert f"exported trial #{study.best_trial.number} " in alone.output
    single = json.loads((tmp_path / "one" / "bundle.json").read_text())
    assert single["val_scores"]["accuracy"] == pytest.approx(study.best_trial.value, abs=1e-9)
    assert single["formats"]["tflite"]["ok"]


def test_predict_files_and_folders_writes_csv_and_json(searched, digits_dir, tmp_path):
    one_file = next((digits_dir / "7").glob("*.png"))
    out_csv, out_json = tmp_path / "p.csv", tmp_path / "p.json"
    result = run("predict", searched["bundle"], one_file, digits_dir / "3", "--csv", out_csv, "--json", out_json)
    rows = list(csv.DictReader(out_csv.open()))
    threes = len(list((digits_dir / "3").glob("*.png")))
    assert len(rows) == threes + 1
    assert rows[0]["path"] == str(one_file)
    assert one_file.name in result.output and "probability" in result.output
    assert all(r["class"] in r["set"].split("|") for r in rows)
    predicted_threes = [r["class"] == "3" for r in rows[1:]]
    assert np.mean(predicted_threes) >= 0.85
    entries = json.loads(out_json.read_text())
    assert len(entries) == len(rows)
    assert all(abs(sum(e["probabilities"].values()) - 1.0) < 1e-4 for e in entries)
    assert all(e["probability"] == max(e["probabilities"].values()) for e in entries)


def test_predict_explain_writes_an_overlay_per_image_and_the_api_returns_the_maps(searched, digits_dir, tmp_path):
    """Occlusion maps of the averaged bundle: an overlay per image at the image's own size, and (N, size, size)
    maps in [0, 1] from the Python API, Grad-CAM's too; predictions without it never load the model a second time."""
    import cv2

    from automl_img.outputs import explain

    files = sorted((digits_dir / "3").glob("*.png"))
    result = run("predict", searched["bundle"], digits_dir / "3", "--explain", tmp_path / "why")
    overlays = sorted((tmp_path / "why").glob("*.png"))
    assert len(overlays) == len(files) and f"{len(files)} overlays" in result.output
    assert {cv2.imread(str(path)).shape for path in overlays} == {(8, 8, 3)}  # the digits' own size, in colour
    bundle = automl_img.load_bundle(searched["bundle"])
    bundle.predict(files[:3])
    assert "keras_model" not in vars(bundle)  # --explain adds nothing to predictions made without it
    maps = bundle.explain(files[:5])
    size = bundle.image_size
    assert maps.shape == (5, size, size) and maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1.0)
    assert len(explain.members(bundle.keras_model)) == 3  # the three averaged trials, explained as they predict
    cams = bundle.explain(files[:5], method="grad-cam")  # the members' Grad-CAM maps, combined
    assert cams.shape == maps.shape and np.allclose(cams.max(axis=(1, 2)), 1.0)
    with pytest.raises(automl_img.DataError, match="unknown explanation method 'lime'; choose from occlusion"):
        bundle.explain(files[:1], method="lime")


def test_search_creates_then_resumes_the_study(workdir, digits_dir):
    first = run("search", digits_dir, "--trials", 2, "--epochs", 2, "--seed", 1)
    assert "0 finished trial(s) so far" in first.output
    before = {t.number: (t.state, t.value, t.params) for t in load_study().trials}
    assert len(before) == 2
    assert before[0][2] == {  # a new study starts from every default (8 px: the only size)
        "image_size": 8,
        "batch_size": 64,
        "learning_rate": 0.002,
        "weight_decay": 0.01,
        "label_smoothing": 0.1,
        "rotation": 5.0,
        "zoom": 0.05,
        "width_shift": 0.05,
        "height_shift": 0.05,
        "horizontal_flip": False,
        "erasing": 0.0,
        "activations": "relu",
        "batch_norm": True,
        "convs_per_block": 2,
        "stem": "none",
        "filters_1": 32,
        "filters_2": 64,
        "filters_3": 128,
        "filters_4": 128,
        "dropout": 0.3,
        "head": "average",
        "dense_units": 256,
    }

    again = run("search", digits_dir, "--trials", 3, "--epochs", 2, "--seed", 1)
    assert "2 finished trial(s) so far" in again.output
    after = {t.number: (t.state, t.value, t.params) for t in load_study().trials}
    assert len(after) == 3 and all(after[n] == before[n] for n in before)
    assert after[2][2] != after[0][2]  # the resumed run does not replay the first trial's parameters

    done = run("search", digits_dir, "--trials", 3, "--epochs", 2)
    assert "has 3 finished trials" in done.output and len(load_study().trials) == 3
    split = json.loads((workdir / "studies" / "digits" / "split.json").read_text())
    assert len(split["files"]) == 1797


def test_pre_split_layout_is_used_as_given(workdir, digits_dir, tmp_path):
    data = tmp_path / "presplit"
    for digit in range(10):
        files = sorted((digits_dir / str(digit)).glob("*.png"))
        for part, chosen in (("train", files[:30]), ("val", files[30:38]), ("test", files[38:46])):
            (data / part / str(digit)).mkdir(parents=True)
            for file in chosen:
                shutil.copy(file, data / part / str(digit) / file.name)
    run("search", data, "--trials", 1, "--epochs", 1)
    split = json.loads((workdir / "studies" / "presplit" / "split.json").read_text())
    assert {path.split("/")[0] == part for path, _, part in split["files"]} == {True}
    assert sum(part == "test" for *_, part in split["files"]) == 80
    exported = run("export-best")
    assert "test split: 80 images" in exported.output


def test_unreadable_files_are_reported_by_name_and_count(workdir, digits_copy):
    # names with brackets print as they are, not as the terminal's markup
    (digits_copy / "0" / "corrupt[1].png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    (digits_copy / "1" / "empty.png").write_bytes(b"")
    (digits_copy / "2" / "notes[red].txt").write_text("not an image")
    result = run("search", digits_copy, "--trials", 1, "--epochs", 1)
    assert "skipped unreadable 2 files" in result.output
    assert "0/corrupt[1].png (not a readable image" in result.output
    assert "1/empty.png (empty file)" in result.output
    assert "2/notes[red].txt (not an image file extension)" in result.output
    assert load_study("digits-copy").trials[0].state == optuna.trial.TrialState.COMPLETE


def test_local_plugins_folder_is_loaded_and_searched(workdir, digits_dir):
    shutil.copytree(REPO / "plugins", workdir / "plugins")
    listing = run("plugins").output
    assert "csv " in listing and "local file plugins/csv_labels.py" in listing
    assert "small-resnet" in listing and "local file plugins/small_resnet.py" in listing
    table = workdir / "labels.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for digit in range(10):
            for file in sorted((digits_dir / str(digit)).glob("*.png"))[:20]:
                writer.writerow([str(file), f"digit-{digit}"])
    searched = run("search", table, "--dataset", "csv", "--architecture", "small-resnet", "--trials", 1, "--epochs", 1)
    assert "plugins: local file plugins/csv_labels.py; local file plugins/small_resnet.py" in searched.output
    trial = load_study("labels.csv").trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert {"base_filters", "blocks_per_stage", "stages"} <= set(trial.params)


class TinyPlugin:
    """A fake third-party plugin: a loader that subsets the digits and a one-layer model."""

    def __init__(self, digits_dir: Path):
        self.digits_dir = digits_dir

    @hookimpl
    def register_dataset_loaders(self, register):
        from automl_img.data import list_image_folder

        register("few-digits", lambda source: list_image_folder(self.digits_dir))

    @hookimpl
    def register_architectures(self, register):
        def build(hp, input_shape, num_classes):
            from automl_img.tf_runtime import keras

            inputs = keras.Input(input_shape)
            hidden = keras.layers.Dense(hp.Int("tiny_units", 8, 32, step=8), activation="relu")(
                keras.layers.Flatten()(inputs)
            )
            return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(hidden))

        register("tiny-mlp", build)


@pytest.fixture
def tiny_plugin(digits_dir, register_plugin):
    return register_plugin(TinyPlugin(digits_dir), name="tiny")


def test_registered_plugin_is_listed_and_used_by_a_search(workdir, tiny_plugin):
    listing = run("plugins").output
    assert "few-digits" in listing and "tiny-mlp" in listing and "registered in-process" in listing
    run("search", "--dataset", "few-digits", "--architecture", "tiny-mlp", "--trials", 2, "--epochs", 2)
    trials = load_study("few-digits").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2, [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    assert all(t.params["tiny_units"] in (8, 16, 24, 32) for t in trials)


class RegularisedPlugin:
    """An architecture that names one of its choices like a parameter of the training recipe: ``weight_decay``,
    as an L2 penalty on its dense kernel."""

    @hookimpl
    def register_architectures(self, register):
        def build(hp, input_shape, num_classes):
            from automl_img.tf_runtime import keras

            penalty = keras.regularizers.L2(hp.Choice("weight_decay", [1e-4, 1e-3]))
            model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten()])
            model.add(keras.layers.Dense(hp.Int("units", 32, 64, step=32), "relu", kernel_regularizer=penalty))
            model.add(keras.layers.Dense(num_classes, activation="softmax"))
            return model

        register("regularised", build)


def test_an_architecture_may_use_the_training_recipes_parameter_names(workdir, few_digits, register_plugin):
    """Its ``weight_decay`` (a choice) is stored as ``regularised/weight_decay``, beside the recipe's own (a
    range): before, every trial failed ("Cannot set different distribution kind to the same parameter name").
    Both are searched, narrowed and rebuilt by their names."""
    register_plugin(RegularisedPlugin(), name="regularised")
    search = ("search", few_digits, "--architecture", "regularised", "--epochs", 1, "--seed", 0)
    run(*search, "--trials", 2, "-p", "regularised/weight_decay=0.001")
    trials = load_study("few-digits").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2, [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    for trial in trials:
        assert trial.params["regularised/weight_decay"] == 0.001  # the architecture's, narrowed by its name
        assert 0 <= trial.params["weight_decay"] <= 0.1  # the recipe's, its own range
        assert "units" in trial.params
    run("export-best", "--study", "few-digits", "--ensemble", 1)  # rebuilt from the stored names
    assert (workdir / "studies" / "few-digits" / "export" / "bundle.json").is_file()
    refused = run(*search, "--study", "other", "--trials", 1, "-p", "regularised/units=48", expect=1)
    assert "regularised/units" in refused.output  # a name the architecture never gave that prefix is unknown
