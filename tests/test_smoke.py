"""The fast lane's walk through every command (search, studies, show, export-best, predict, report, plugins):
one trial of two epochs on a dozen digits per class. Small enough for ``pytest -m "not slow"``; the slow tests
check the same commands at full size, for accuracy, resumes, crashes and every export format."""

from __future__ import annotations

import csv
import json
import re

import optuna
import pytest
from helpers import load_study, run, studies_at

PER_CLASS = 12  # conftest's few_digits


@pytest.fixture(scope="module")
def searched_once(tmp_path_factory, few_digits) -> dict:
    """One seeded trial of two epochs, kept in a studies folder of its own (AUTOML_IMG_STUDIES)."""
    with studies_at(tmp_path_factory.mktemp("smoke") / "studies") as studies:
        search = run("search", few_digits, "--trials", 1, "--epochs", 2, "--seed", 0)
    return {"studies": studies, "search": search.output}


@pytest.fixture
def searched(searched_once, use_studies) -> dict:
    use_studies(searched_once["studies"])
    return searched_once


def test_one_trial_search_is_recorded_and_summarised(searched):
    out = searched["search"]
    assert "study few-digits in the default storage" in out and "0 finished trial(s) so far" in out
    assert f"data: {10 * PER_CLASS} images, 10 classes" in out
    assert re.search(r"#0 epoch 1/2: val accuracy \d\.\d{4}", out) and re.search(r"#0 epoch 2/2: val accuracy", out)
    assert "trials: 1 completed, 0 pruned, 0 failed" in out.splitlines()
    [trial] = load_study("few-digits").trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert f"best: trial #0, val accuracy {trial.value:.4f}" in out
    assert trial.user_attrs["stopped_by"] == "max epochs" and len(trial.user_attrs["history"]) == 2
    assert trial.value == pytest.approx(trial.user_attrs["val_scores"]["accuracy"])
    # Everything the study keeps lies in the AUTOML_IMG_STUDIES folder, not under the current directory.
    folder = searched["studies"] / "few-digits"
    assert (folder / trial.user_attrs["weights"]).is_file()
    split = json.loads((folder / "split.json").read_text())
    assert len(split["files"]) == 10 * PER_CLASS


def test_studies_show_and_plugins_list_what_there_is(searched, few_digits):
    [trial] = load_study("few-digits").trials
    row = next(line for line in run("studies").output.splitlines() if line.strip().startswith("few-digits"))
    assert f"#0 accuracy {trial.value:.4f}" in row and str(few_digits) in row

    shown = run("show").output  # the only study: no name needed
    assert re.search(rf"^\s*0\s*[│|]\s*complete\s*[│|]\s*{trial.value:.4f}\s*[│|]", shown, re.M), shown
    assert f"best: trial #0, val accuracy {trial.value:.4f}" in shown
    assert "parameter importances: needs at least 3 completed trials (1 so far)" in shown

    listing = run("plugins").output
    for kind, name in (
        ("dataset", "folder"),
        ("dataset", "digits"),
        ("architecture", "blog-cnn"),
        ("exporter", "keras"),
    ):
        assert re.search(rf"^\s*{kind}\s*[│|]\s*{name}\s*[│|]\s*built-in", listing, re.M), listing


def test_export_predict_and_report_use_the_study(searched, few_digits, tmp_path):
    exported = run("export-best", "--format", "tflite").output
    assert "exported trial #0 of study few-digits" in exported
    bundle_dir = searched["studies"] / "few-digits" / "export"  # the default folder follows AUTOML_IMG_STUDIES
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    split = json.loads((searched["studies"] / "few-digits" / "split.json").read_text())
    test_images = sum(part == "test" for *_, part in split["files"])
    assert [m["trial"] for m in bundle["members"]] == [0] and bundle["test"]["images"] == test_images
    assert f"test split: {test_images} images, accuracy {bundle['test']['accuracy']:.4f}" in exported
    assert set(bundle["formats"]) == {"keras", "tflite"}
    assert all(check["ok"] and check["checked_on_test_images"] == test_images for check in bundle["formats"].values())

    sevens = sorted((few_digits / "7").glob("*.png"))
    classes = {}
    for name in ("keras", "tflite"):
        predicted = run("predict", bundle_dir, few_digits / "7", "--format", name, "--csv", tmp_path / f"{name}.csv")
        rows = list(csv.DictReader((tmp_path / f"{name}.csv").open()))
        assert sorted(r["path"] for r in rows) == sorted(map(str, sevens)) and sevens[0].name in predicted.output
        assert all(r["class"] in bundle["class_names"] and 0 < float(r["probability"]) <= 1 for r in rows)
        classes[name] = [r["class"] for r in rows]
    assert classes["tflite"] == classes["keras"]

    written = run("report", "--out", tmp_path / "report.html").output
    assert "report.html" in written
    page = (tmp_path / "report.html").read_text()
    for heading in (
        "Study few-digits",
        "Optimisation history",
        "Learning curves of the best trial (#0)",
        "Confusion matrix on the test split",
        "Trials",
    ):
        assert heading in page
    sections = dict(re.findall(r"<h2>(.*?)</h2>(.*?)(?=<h2>|$)", page, flags=re.S))
    for title in (
        "Parallel coordinates of the most important parameters",
        "Slices: objective against each important parameter",
    ):  # one trial: noise, so left out
        assert "<img" not in sections[title] and "Left out: with 1 completed trial" in sections[title], title
    assert "<img" in sections["Optimisation history"] and "<img" in sections["Learning curves of the best trial (#0)"]
    calibrated = sections["Calibration and prediction sets"]
    assert "<img" in calibrated and f"test coverage {bundle['calibration']['test_coverage']:.4f}" in calibrated
