"""Seeing a study (studies, show, report, dashboard), deployable exports, and results users can trust."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import load_study, run, studies_at, trials_of

from automl_img import hookimpl

# Every test here runs a search or uses one (test_smoke.py holds the fast lane's): all slow.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched_studies(tmp_path_factory, digits_dir) -> Path:
    """A finished 3-trial search on the digits, in a studies folder of its own."""
    with studies_at(tmp_path_factory.mktemp("ecosystem") / "studies") as studies:
        run(
            "search",
            digits_dir,
            "--trials",
            3,
            "--epochs",
            6,
            "--seed",
            5,
            "-p",
            "image_size=8",
            "-p",
            "learning_rate=0.002..0.01",
        )
    return studies


@pytest.fixture
def study_dir(searched_studies, use_studies) -> Path:
    """The shared study, for the read-only tests below: their CLI calls and ``load_study`` use its folder."""
    return use_studies(searched_studies)


def table_rows(output: str) -> list[list[str]]:
    """The body rows of the rich tables in ``output``, as lists of stripped cells."""
    return [
        [cell.strip() for cell in re.split(r"[│|]", line)]
        for line in output.splitlines()
        if re.search(r"[│|]", line) and "┃" not in line
    ]


def test_studies_lists_counts_best_and_update(study_dir, digits_dir):
    result = run("studies")
    row = next(line for line in result.output.splitlines() if line.strip().startswith("digits"))
    study = load_study()
    assert f"#{study.best_trial.number} accuracy {study.best_value:.4f}" in row
    assert str(digits_dir) in row and " 3 " in row


def test_show_prints_trials_best_params_and_importances(study_dir):
    out = run("show", "digits").output
    study = load_study()
    assert len(study.trials) == 3
    trials_table, _, importances = out.partition("parameter importances (fANOVA)")
    listed = {int(row[0]): row[1:3] for row in table_rows(trials_table)}
    assert listed == {
        t.number: [t.state.name.lower(), f"{t.value:.4f}" if t.value is not None else ""] for t in study.trials
    }, out

    best = study.best_trial
    lines = [line.strip() for line in out.splitlines()]
    at = lines.index(f"best: trial #{best.number}, val accuracy {best.value:.4f}")
    shown = dict(word.split("=", 1) for word in lines[at + 1].split())
    assert set(shown) == set(best.params), lines[at + 1]
    assert float(shown["learning_rate"]) == pytest.approx(best.params["learning_rate"], rel=5e-3)

    assert importances, f"no fANOVA importances section (3 completed trials are enough):\n{out}"
    ranked = table_rows(importances)
    names, values = [row[0] for row in ranked], [float(row[1]) for row in ranked]
    assert "learning_rate" in names and set(names) <= set(best.params), names
    assert values == sorted(values, reverse=True) and all(0 <= v <= 1 for v in values)
    assert sum(values) == pytest.approx(1, abs=0.0005 * len(values))  # shares, each printed to 3 decimals


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Debian's Chromium and ChromeDriver, installed with apt-get when missing (as root)."""
    if (
        not (shutil.which("chromium") and shutil.which("chromedriver"))
        and shutil.which("apt-get")
        and os.geteuid() == 0
    ):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.fail("chromium and chromedriver are needed: apt-get install chromium chromium-driver (.ci/run does)")
    return browser, driver


def test_report_renders_in_headless_chromium(study_dir, tmp_path, chromium):
    from selenium import webdriver

    run("report", "digits", "--out", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    for heading in (
        "Optimisation history",
        "Parameter importances",
        "Parallel coordinates",
        "Learning curves",
        "Confusion matrix on the test split",
        "Misclassified test images",
        "Trials",
    ):
        assert heading in page
    options = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    options.binary_location = chromium[0]
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(chromium[1]))
    try:
        driver.get((tmp_path / "report.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
        )
        drawn = {
            "Optimisation history",
            "Parameter importances (fANOVA)",
            "Confusion matrix on the test split",
            "Calibration and prediction sets",
            "Misclassified test images",
        }  # 3 completed trials: too few for parallel coordinates and slices
        assert drawn <= {alt for alt, _ in images} and all(ok for _, ok in images), images
        assert not [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_dashboard_serves_the_study_on_loopback(study_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "automl_img", "dashboard", "digits", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, studies = time.time() + 60, None
        while time.time() < deadline and studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "the dashboard never answered"
        assert [s["study_name"] for s in studies["study_summaries"]] == ["digits"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=5) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_every_export_format_is_checked_and_predicts_like_keras(study_dir, digits_dir, tmp_path):
    out = tmp_path / "bundle"
    result = run("export-best", "--out", out, "--format", "savedmodel,tflite", "--format", "onnx")
    bundle = json.loads((out / "bundle.json").read_text())
    assert set(bundle["formats"]) == {"keras", "savedmodel", "tflite", "onnx"}
    for name, check in bundle["formats"].items():
        assert check["ok"] and check["bytes"] > 1000 and check["checked_on_test_images"] > 200, (name, check)
        assert name in result.output
    classes = {}
    for name in bundle["formats"]:
        run("predict", out, digits_dir / "4", "--format", name, "--csv", tmp_path / f"{name}.csv")
        classes[name] = [line.split(",")[1] for line in (tmp_path / f"{name}.csv").read_text().splitlines()[1:]]
    assert all(found == classes["keras"] for found in classes.values())
    assert len(classes["keras"]) == len(list((digits_dir / "4").glob("*.png")))


def test_int8_litert_is_4x_smaller_and_its_accuracy_change_is_measured(study_dir, digits_dir, tmp_path):
    out = tmp_path / "int8"
    result = run("export-best", "--out", out, "--ensemble", 1, "--format", "tflite-int8")
    bundle = json.loads((out / "bundle.json").read_text())
    keras, int8 = bundle["formats"]["keras"], bundle["formats"]["tflite-int8"]
    assert int8["quantized"] and int8["checked_on_test_images"] == bundle["test"]["images"]
    assert int8["bytes"] < 0.35 * keras["bytes"], (int8["bytes"], keras["bytes"])
    assert keras["test_accuracy"] == bundle["test"]["accuracy"] > 0.75  # a model worth quantising
    assert int8["ok"] == (int8["test_accuracy"] >= keras["test_accuracy"] - 0.01)
    assert int8["ok"] and int8["max_abs_probability_difference"] > 1e-6  # lossy, and honestly so
    assert f"{int8['test_accuracy']:.4f} ({int8['test_accuracy'] - keras['test_accuracy']:+.4f})" in result.output
    classes = {}
    for name in ("keras", "tflite-int8"):
        run("predict", out, digits_dir / "7", "--format", name, "--csv", tmp_path / f"{name}.csv")
        classes[name] = [row["class"] for row in csv.DictReader((tmp_path / f"{name}.csv").open())]
    assert len(classes["tflite-int8"]) == len(list((digits_dir / "7").glob("*.png")))
    same = sum(a == b for a, b in zip(classes["keras"], classes["tflite-int8"]))
    assert same >= 0.95 * len(classes["keras"]), (same, len(classes["keras"]))


def test_refit_trains_on_train_and_val_for_the_best_epoch_count(study_dir, tmp_path):
    run("export-best", "--out", tmp_path / "refit", "--refit", "--ensemble", 3)
    bundle = json.loads((tmp_path / "refit" / "bundle.json").read_text())
    study = load_study()
    assert bundle["refit"]["epochs"] == [study.trials[m["trial"]].user_attrs["best_epoch"] for m in bundle["members"]]
    assert len(bundle["members"]) == 3
    assert bundle["refit"]["images"] == bundle["dataset"]["split"]["train"] + bundle["dataset"]["split"]["val"]
    assert bundle["test"]["accuracy"] > 0.8


def test_bundle_records_how_to_reproduce_it(study_dir, tmp_path):
    run("export-best", "--out", tmp_path / "b")
    bundle = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert {"tensorflow", "keras", "optuna", "numpy"} <= set(bundle["created_on"])
    assert len(bundle["dataset"]["split_hash"]) == 16
    command = bundle["reproduce"]["search_command"]
    assert command.startswith("automl-img search ") and "--seed 5" in command and "-p image_size=8" in command
    assert bundle["reproduce"]["seed"] == 5 + bundle["trial"]


def test_same_seed_same_parameters_and_scores(workdir, digits_dir):
    for study in ("first", "second"):
        run("search", digits_dir, "--study", study, "--trials", 2, "--epochs", 2, "--seed", 11, "-p", "image_size=8")
    first, second = trials_of("first"), trials_of("second")
    assert [t.params for t in first] == [t.params for t in second]
    assert [t.value for t in first] == [t.value for t in second]


def test_unbalanced_classes_get_class_weights_and_say_so(workdir, digits_dir, tmp_path):
    data = tmp_path / "unbalanced"
    for digit, count in (("0", 90), ("1", 30), ("2", 15)):
        (data / digit).mkdir(parents=True)
        for file in sorted((digits_dir / digit).glob("*.png"))[:count]:
            shutil.copy(file, data / digit / file.name)
    weighted = run("search", data, "--trials", 1, "--epochs", 1, "-p", "image_size=8")
    split = json.loads((workdir / "studies" / "unbalanced" / "split.json").read_text())
    train = [label for _, label, part in split["files"] if part == "train"]
    skew = max(map(train.count, set(train))) / min(map(train.count, set(train)))
    assert f"classes are unbalanced (largest/smallest {skew:.1f})" in weighted.output
    plain = run(
        "search", data, "--study", "plain", "--trials", 1, "--epochs", 1, "-p", "image_size=8", "--class-weights", "off"
    )
    assert "unbalanced" not in plain.output
    from automl_img.study.config import StudyConfig

    configs = {s: StudyConfig.of(load_study(s)) for s in ("unbalanced", "plain")}
    assert configs["unbalanced"].balance_classes and not configs["plain"].balance_classes
    weights = configs["unbalanced"].class_weights(np.array([0] * 6 + [1] * 2 + [2]), np.arange(9))
    assert weights == pytest.approx({0: 0.5, 1: 1.5, 2: 3.0})


@pytest.mark.parametrize("objective, scored", [("balanced_accuracy", "balanced_accuracy"), ("loss", "loss")])
def test_objective_is_selectable(workdir, digits_dir, objective, scored):
    run("search", digits_dir, "--trials", 1, "--epochs", 2, "--objective", objective, "-p", "image_size=8")
    study = load_study()
    trial = study.trials[0]
    assert trial.value == pytest.approx(trial.user_attrs["val_scores"][scored])
    assert study.direction.name == ("MINIMIZE" if objective == "loss" else "MAXIMIZE")


def test_json_lines_mode_is_one_object_per_line(workdir, digits_dir):
    out = run("search", digits_dir, "--trials", 1, "--epochs", 2, "-p", "image_size=8", "--json").output
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "study" and kinds[-1] == "summary"
    assert kinds.count("epoch") == 2 and "trial_start" in kinds and "trial_end" in kinds
    start = events[kinds.index("trial_start")]
    assert (start["epochs"], start["promoted_from"]) == (2, None)  # its schedule's length; not a promotion
    assert events[-1]["completed"] == 1


def test_quiet_mode_prints_only_the_summary(workdir, digits_dir):
    out = run("search", digits_dir, "--trials", 1, "--epochs", 1, "-p", "image_size=8", "--quiet").output
    assert "epoch" not in out and "search ended" in out and "best: trial #0" in out


class KerasH5:
    """Keras' legacy HDF5 file (a real second format, registered the way a plugin would)."""

    file = "model.h5"

    def export(self, model, path):
        model.save(path)

    def load(self, path, safe_mode=True):
        from automl_img.tf_runtime import keras

        model = keras.saving.load_model(path, safe_mode=safe_mode)
        return lambda images: np.asarray(model.predict(images, verbose=0))


class H5Plugin:
    @hookimpl
    def register_exporters(self, register):
        register("h5", KerasH5())


def test_exporter_plugin_is_listed_checked_and_used(study_dir, digits_dir, tmp_path, register_plugin):
    register_plugin(H5Plugin(), name="h5")
    assert "h5" in run("plugins").output
    run("export-best", "--out", tmp_path / "b", "--format", "h5")
    check = json.loads((tmp_path / "b" / "bundle.json").read_text())["formats"]["h5"]
    assert check["ok"] and (tmp_path / "b" / "model.h5").exists()
    out = run("predict", tmp_path / "b", digits_dir / "1", "--format", "h5").output
    assert "probability" in out


def test_missing_format_in_bundle_says_how_to_add_it(study_dir, digits_dir, tmp_path):
    run("export-best", "--out", tmp_path / "keras-only")
    out = run("predict", tmp_path / "keras-only", digits_dir / "1", "--format", "onnx", expect=1).output
    assert "has no onnx model" in out and "--format onnx" in out


def test_installed_plugin_package_shows_up_and_is_searched(workdir, digits_dir, tmp_path):
    target = tmp_path / "site"
    source = Path(__file__).parent / "data" / "hello-plugin"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        check=True,
    )
    # The package itself stays importable the way it was (installed, or a PYTHONPATH checkout).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))}
    listing = subprocess.run(
        [sys.executable, "-m", "automl_img", "plugins"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "hello-mlp" in listing and "entry point (automl-img-hello 0.1.0)" in listing
    search = subprocess.run(
        [
            sys.executable,
            "-m",
            "automl_img",
            "search",
            str(digits_dir),
            "--architecture",
            "hello-mlp",
            "--trials",
            "1",
            "--epochs",
            "1",
            "-p",
            "image_size=8",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert search.returncode == 0, search.stdout + search.stderr
    trial = trials_of("digits")[0]
    assert trial.state.name == "COMPLETE" and "hello_units" in trial.params
