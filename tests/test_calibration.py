"""Calibrated probabilities and prediction sets, on probabilities whose truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import run

from automl_img.outputs.calibration import (
    _interval_masses,
    conformal_threshold,
    expected_calibration_error,
    fit,
    fit_temperature,
    prediction_sets,
    set_text,
    untangle,
    with_temperature,
)


def sampled(images: int, classes: int, seed: int, ordered: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """True class probabilities of ``images`` images and labels drawn from them (a perfectly calibrated model);
    ``ordered``: each image's probability falls off with the distance from a grade, as graders err."""
    rng = np.random.default_rng(seed)
    if ordered:
        centre = rng.uniform(0, classes - 1, size=(images, 1))
        logits = -((np.arange(classes) - centre) ** 2) / rng.uniform(0.2, 1.5, size=(images, 1))
    else:
        logits = rng.normal(0, 2.0, size=(images, classes))
    truth = with_temperature(np.exp(logits - logits.max(axis=1, keepdims=True)), 1.0).astype(np.float64)
    labels = np.array([rng.choice(classes, p=row / row.sum()) for row in truth])
    return truth, labels


def test_temperature_scaling_undoes_an_over_confident_model():
    truth, labels = sampled(6000, 5, seed=0)
    over_confident = with_temperature(truth, 0.4)  # its logits multiplied by 2.5
    fitting, held_out = slice(0, 3000), slice(3000, None)
    temperature = fit_temperature(over_confident[fitting], labels[fitting])
    assert temperature == pytest.approx(2.5, rel=0.1)
    before = expected_calibration_error(over_confident[held_out], labels[held_out])
    after = expected_calibration_error(with_temperature(over_confident[held_out], temperature), labels[held_out])
    assert before > 0.1 and after < 0.03, (before, after)
    kept = with_temperature(over_confident, temperature).argmax(axis=1) == over_confident.argmax(axis=1)
    assert kept.all()  # one temperature never changes the predicted class


def test_outputs_squeezed_by_label_smoothing_are_untangled_before_the_temperature():
    from automl_img.models.training import target_matrix
    from automl_img.space import TrainingParams

    truth, labels = sampled(8000, 10, seed=3)
    targets = target_matrix(10, TrainingParams(28, 64, 1e-3, 0.0, label_smoothing=0.2))
    np.testing.assert_allclose(untangle(truth @ targets, targets), truth, atol=1e-5)  # floored at a millionth
    smoothed = with_temperature(truth, 0.8) @ targets  # a little over-confident, then squeezed as it trained
    fitting, held_out = slice(0, 2000), slice(2000, None)
    alone = fit(smoothed[fitting], labels[fitting], smoothed[held_out], labels[held_out], 0.9, None, False, "val")
    both = fit(smoothed[fitting], labels[fitting], smoothed[held_out], labels[held_out], 0.9, targets, False, "val")
    assert both.temperature == pytest.approx(1.25, rel=0.1)
    assert both.test_ece_after < 0.015 < alone.test_ece_after, (both.test_ece_after, alone.test_ece_after)
    assert both.test_ece_before == alone.test_ece_before  # the model's own probabilities, as they are


def test_the_expected_calibration_error_of_known_bins():
    # Two images at confidence 0.9, one right: a gap of 0.4; two at 0.6, both right: a gap of 0.4.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert expected_calibration_error(probabilities, np.array([0, 1, 1, 1])) == pytest.approx(0.4)


def test_conformal_threshold_is_the_finite_sample_quantile():
    scores = np.arange(1, 10) / 10  # 9 scores: rank ceil(10 * 0.9) = 9, the largest
    assert conformal_threshold(scores, 0.9) == pytest.approx(0.9)
    assert conformal_threshold(scores, 0.5) == pytest.approx(0.5)  # rank ceil(10 * 0.5) = 5
    assert math.isinf(conformal_threshold(scores[:8], 0.9))  # 8 images cannot promise 90 %: every class


@pytest.mark.parametrize("ordinal", [False, True])
def test_sets_cover_held_out_images_as_requested(ordinal):
    truth, labels = sampled(6000, 5, seed=1, ordered=ordinal)
    model = with_temperature(truth, 0.7)  # miscalibrated, as a trained network is
    fitting, held_out = slice(0, 1000), slice(1000, None)
    calibration = fit(model[fitting], labels[fitting], model[held_out], labels[held_out], 0.9, None, ordinal, "val")
    # Coverage given one calibration set varies by about sqrt(0.09 / 1000); the test estimate by sqrt(0.09 / 5000).
    tolerance = 3 * math.sqrt(0.09 / 1000 + 0.09 / 5000)
    assert abs(calibration.test_coverage - 0.9) < tolerance, calibration
    assert 1.0 < calibration.mean_set_size < 3.0, calibration
    assert calibration.test_ece_after < calibration.test_ece_before, calibration


def test_ordinal_sets_grow_from_the_top_grade_towards_the_likelier_neighbour():
    probabilities = np.array([[0.1, 0.5, 0.3, 0.05, 0.05]])
    # Grade 1 first (0.5), then 2 (0.3 > 0.1): 0.8, then 0 (0.1 > 0.05): 0.9, then 3: 0.95, then 4: 1.0. A
    # grade's score is the mass before it joins.
    np.testing.assert_allclose(_interval_masses(probabilities)[0], [0.8, 0.0, 0.5, 0.9, 0.95])
    grades = ["0", "1", "2", "3", "4"]
    held = prediction_sets(probabilities, 0.85, ordinal=True)[0]
    assert held.tolist() == [True, True, True, False, False]
    assert set_text(grades, held, ordinal=True) == "0-2"
    assert set_text(grades, prediction_sets(probabilities, 0.6, ordinal=True)[0], ordinal=True) == "1-2"
    assert set_text(grades, prediction_sets(probabilities, 0.4, ordinal=True)[0], ordinal=True) == "1"
    # The unordered sets of the same probabilities hold every class at least 1 - 0.85 likely, in any order.
    assert prediction_sets(probabilities, 0.85, ordinal=False)[0].tolist() == [False, True, True, False, False]


def test_ordinal_sets_stay_small_when_the_model_is_sure_of_most_images():
    # Half the images are certain (a top probability of 1.0 in float32), half as ambiguous as graders are.
    truth, labels = sampled(6000, 5, seed=4, ordered=True)
    sure = np.eye(5, dtype=np.float32)[labels]
    sure[1::2] = truth[1::2]
    fitting, held_out = slice(0, 1000), slice(1000, None)
    calibration = fit(sure[fitting], labels[fitting], sure[held_out], labels[held_out], 0.9, None, True, "val")
    assert calibration.test_coverage >= 0.9 - 3 * math.sqrt(0.09 / 1000 + 0.09 / 5000), calibration
    assert calibration.mean_set_size < 1.6, calibration  # scored by the mass with the grade in: 4.7


def test_random_ordinal_sets_are_contiguous():
    probabilities = np.random.default_rng(2).dirichlet(np.ones(7) * 0.5, size=500)
    for threshold in (0.3, 0.6, 0.9):
        for held in prediction_sets(probabilities, threshold, ordinal=True):
            grades = np.flatnonzero(held)
            assert len(grades) == grades[-1] - grades[0] + 1, held


def test_the_top_class_is_always_in_the_set():
    probabilities = np.array([[0.4, 0.35, 0.25]])
    assert prediction_sets(probabilities, 0.1, ordinal=False)[0].tolist() == [True, False, False]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--coverage", "1.5"], "--coverage must lie between 0 and 1 (got 1.5)"),
        (["--calibrate-on", "train"], "--calibrate-on must be one of val, test-half (got train)"),
        (["--refit", "--calibrate-on", "val"], "--refit trains on the val split"),
    ],
)
def test_bad_calibration_options_are_refused_before_any_work(workdir, args, message):
    result = run("export-best", *args, expect=1)
    assert message in result.output and "Traceback" not in result.output
