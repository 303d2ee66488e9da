"""Grades: classes put in order, ordinal training targets, QWK and MAE, sets of neighbouring grades."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import run

from automl_img.data import ImageSet
from automl_img.errors import DataError, StudyError
from automl_img.models.metrics import scores
from automl_img.searching.options import SearchOptions

GRADES = ("none", "mild", "moderate", "severe")  # in name order: mild, moderate, none, severe


def graded_folder(root: Path, per_grade: int = 80, seed: int = 0) -> Path:
    """A bar across a noisy 24 px image, longer with each grade, with lengths that overlap between neighbours."""
    rng = np.random.default_rng(seed)
    for grade, name in enumerate(GRADES):
        (root / name).mkdir(parents=True)
        for n in range(per_grade):
            image = rng.normal(60, 12, (24, 24)).clip(0, 255)
            length = int(np.clip(4 + 5 * grade + rng.normal(0, 1.6), 1, 22))
            row = int(rng.integers(4, 20))
            image[row : row + 3, 1 : 1 + length] = 220
            cv2.imwrite(str(root / name / f"{n}.png"), image.astype(np.uint8))
    return root


def labelled(names: list[str]) -> ImageSet:
    return ImageSet.from_labelled_files("/data", [(f"{name}/{n}.png", name) for name in names for n in range(2)])


def test_numbered_classes_are_ordered_by_their_numbers_and_labels_follow():
    images = labelled(["10_worst", "2", "0"])  # by name: 0, 10_worst, 2
    ordered = images.in_grade_order()
    assert ordered.class_names == ("0", "2", "10_worst")
    for path, label in zip(ordered.paths, ordered.labels):
        assert path.startswith(ordered.class_names[label] + "/")


def test_a_given_order_is_used_and_a_wrong_one_is_refused():
    images = labelled(list(GRADES))
    assert images.in_grade_order(list(GRADES)).class_names == GRADES
    with pytest.raises(DataError, match=r"names 'moderat', which is not a class here; the classes are mild"):
        images.in_grade_order(["none", "mild", "moderat", "severe"])
    with pytest.raises(DataError, match="leaves out severe"):
        images.in_grade_order(["none", "mild", "moderate"])
    with pytest.raises(DataError, match=r"do not say an order; give it lowest grade first, e.g. --class-order"):
        images.in_grade_order()


def test_ordinal_targets_and_their_loss_on_known_values():
    from automl_img.models.training import ordinal_targets
    from automl_img.tf_runtime import keras

    targets = ordinal_targets(5)
    weights = np.exp(-2.0 * np.array([4.0, 1.0, 0.0, 1.0, 4.0]))
    np.testing.assert_allclose(targets[2], weights / weights.sum(), rtol=1e-6)
    assert targets[2].argmax() == 2 and targets[0, 1] > targets[0, 2] > targets[0, 3]
    loss = keras.losses.CategoricalCrossentropy()
    one_off, far_off = np.array([[0.05, 0.8, 0.05, 0.05, 0.05]]), np.array([[0.05, 0.05, 0.05, 0.05, 0.8]])
    expected = -(targets[2] * np.log(one_off[0])).sum()
    assert float(loss(targets[2:3], one_off)) == pytest.approx(expected, rel=1e-5)
    # The same confidence in a wrong grade costs less one grade off than two off; one-hot targets cannot tell.
    assert float(loss(targets[2:3], one_off)) < float(loss(targets[2:3], far_off))
    one_hot = np.eye(5, dtype="f4")[2:3]
    assert float(loss(one_hot, one_off)) == pytest.approx(float(loss(one_hot, far_off)))


def test_qwk_and_mae_count_how_far_a_miss_is():
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    near, far = np.array([0, 1, 2, 2, 0, 1, 2, 3]), np.array([0, 1, 2, 0, 0, 1, 2, 3])  # one miss each
    near_scores, far_scores = (scores(labels, np.eye(4)[predicted]) for predicted in (near, far))
    assert near_scores["accuracy"] == far_scores["accuracy"] == 0.875
    assert (near_scores["mae"], far_scores["mae"]) == (0.125, 0.375)
    for predicted, found in ((near, near_scores), (far, far_scores)):
        assert found["qwk"] == pytest.approx(kappa_by_definition(labels, predicted, 4), abs=1e-9)
    assert near_scores["qwk"] > 0.9 > far_scores["qwk"]


def kappa_by_definition(labels: np.ndarray, predicted: np.ndarray, grades: int) -> float:
    """1 - sum(w * observed) / sum(w * expected by chance), with weights (i - j)^2."""
    observed = np.zeros((grades, grades))
    np.add.at(observed, (labels, predicted), 1)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    weights = (np.arange(grades)[:, None] - np.arange(grades)[None, :]) ** 2
    return float(1 - (weights * observed).sum() / (weights * expected).sum())


def test_ordinal_objectives_need_ordered_classes():
    with pytest.raises(StudyError, match="add --ordinal"):
        SearchOptions(objective="qwk")
    assert SearchOptions(ordinal=True).ranked_by == "qwk"
    assert SearchOptions(class_order="a,b,c").grade_order == ["a", "b", "c"]
    assert SearchOptions().ranked_by == "accuracy"


def test_a_class_order_naming_a_missing_folder_is_a_one_line_error(workdir, tmp_path):
    data = graded_folder(tmp_path / "graded", per_grade=8)
    result = run("search", data, "--class-order", "none,mild,moderat,severe", "--trials", 1, expect=1)
    assert "'moderat', which is not a class here" in result.output and "Traceback" not in result.output
    assert not (workdir / "studies" / "graded").exists() or not any((workdir / "studies" / "graded").iterdir())


@pytest.mark.slow
def test_ordinal_search_export_and_predict_on_a_handmade_graded_folder(workdir, tmp_path):
    data = graded_folder(tmp_path / "graded")
    order = ",".join(GRADES)
    search = run(
        "search", data, "--class-order", order, "--trials", 1, "--epochs", 10, "--seed", 3, "-p", "batch_size=16"
    )
    assert f"classes are grades, lowest first: {', '.join(GRADES)}; ranked by val qwk" in search.output
    export = run("export-best")
    bundle = json.loads((workdir / "studies" / "graded" / "export" / "bundle.json").read_text())
    assert bundle["ordinal"] and bundle["class_names"] == list(GRADES) and bundle["objective"] == "qwk"
    assert bundle["calibration"]["ordinal"]
    assert bundle["test"]["qwk"] > 0.8, bundle["test"]
    assert f"QWK {bundle['test']['qwk']:.4f}" in export.output
    trial_params = [member["params"] for member in bundle["members"]]
    assert all(params["targets"] in ("one-hot", "ordinal") for params in trial_params)
    out = tmp_path / "p.csv"
    run("predict", workdir / "studies" / "graded" / "export", data / "moderate", "--csv", out)
    rows = list(csv.DictReader(out.open()))
    assert np.mean([row["class"] in ("mild", "moderate", "severe") for row in rows]) > 0.9
    for row in rows:
        held = row["set"].split("-")  # a range of grades in their order, or one grade
        low, high = GRADES.index(held[0]), GRADES.index(held[-1])
        assert low <= GRADES.index(row["class"]) <= high
        assert 0.0 <= float(row["expected_grade"]) <= 3.0
    assert np.mean([float(row["expected_grade"]) for row in rows]) == pytest.approx(2.0, abs=0.5)
