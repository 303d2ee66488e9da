"""Trustworthy probabilities: temperature scaling (Guo et al., 2017) and split-conformal prediction sets.

A network trained towards smoothed or soft targets (label smoothing, ordinal targets) learns to output
``p @ targets``, not the class probabilities ``p``: its confidence is squeezed towards the targets' floor,
differently at each confidence, which one temperature cannot undo (Mueller et al., 2019, find label smoothing
hurts temperature scaling). Calibration therefore first solves for ``p`` (``untangle``), then fits the
temperature. On a label-smoothed Fashion-MNIST model a temperature alone left an expected calibration error of
0.027 at best; the two steps, fitted on 900 images, 0.015 (benchmarks/README.md).

Both are fitted at export on held-out images (the val split, or half of the test split) and applied to the
probabilities of every export format by the same few lines (``Calibration.apply``), so the formats' parity holds.

Sets. Unordered classes: every class whose calibrated probability is at least ``1 - threshold``, the least
ambiguous sets (LAC; Sadinle, Lei & Wasserman, 2019): the smallest mean size for the coverage asked. Grades
(ordinal labels): a contiguous range grown from the most likely grade, each step taking the more likely
neighbour, until the range holds more than ``threshold`` of the probability (the ordinal adaptive sets of Lu et
al., 2022). A grade's score is the range's mass before the grade joins it, so a confidently right image scores
0, not its confidence: scored by the mass with the grade in, a model sure of most images (a top probability of
1.0 in float32) pushes the threshold to 1.0, where the range takes every grade the rounding leaves at 1.0
(mean sets of 4 grades in 5 on the fine-detail set at 85 % accuracy).
Either way the split-conformal quantile of the calibration images' scores gives at least the requested
coverage on exchangeable images (Angelopoulos & Bates, 2021); the most likely class is always in the set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ECE_BINS = 15  # equal-width confidence bins, as Guo et al. measure
TEMPERATURE_RANGE = (0.05, 20.0)
_FLOOR = 1e-12  # log of a probability the model rounds to zero
UNTANGLED_FLOOR = 1e-6


@dataclass(frozen=True)
class Reliability:
    """Top-class confidence against accuracy, per confidence bin with images (a reliability diagram)."""

    confidence: list[float]
    accuracy: list[float]
    images: list[int]


@dataclass(frozen=True)
class Calibration:
    """How the bundle's probabilities are calibrated and how its prediction sets are drawn, and how both did."""

    temperature: float  #: calibrated = softmax(log(untangle(model's probabilities)) / temperature)
    coverage: float  #: requested share of images whose set holds the true class
    threshold: float  #: the conformal quantile of the calibration images' scores (``inf``: every class)
    ordinal: bool  #: sets are contiguous ranges of grades
    fitted_on: str  #: "val" or "half of test"
    calibration_images: int
    test_images: int  #: the images every figure below was measured on
    test_ece_before: float
    test_ece_after: float
    test_coverage: float
    mean_set_size: float
    several_classes: float  #: share of test images whose set holds more than one class
    reliability_before: Reliability | None = None
    reliability_after: Reliability | None = None
    #: (classes, classes) the members' training targets, averaged (row y: what class y's images were pulled
    #: towards); None: one-hot, unsmoothed
    targets: list[list[float]] | None = None

    def describe(self) -> list[str]:
        """How the probabilities were calibrated and how the sets did on test, in two lines."""
        return [
            f"probabilities calibrated on {self.fitted_on} ({self.calibration_images} images): temperature "
            f"{self.temperature:.3f}; test expected calibration error {self.test_ece_before:.4f} before, "
            f"{self.test_ece_after:.4f} after",
            f"{self.coverage:.0%} prediction sets{' of contiguous grades' if self.ordinal else ''}: test coverage "
            f"{self.test_coverage:.4f} on {self.test_images} images, mean size {self.mean_set_size:.2f}, "
            f"{self.several_classes:.1%} unsure (more than one class)",
        ]

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        return with_temperature(untangle(probabilities, self.targets), self.temperature)

    def sets(self, calibrated: np.ndarray) -> np.ndarray:
        """(images, classes) booleans: which classes each image's prediction set holds."""
        return prediction_sets(calibrated, self.threshold, self.ordinal)

    @classmethod
    def from_json(cls, stored: dict) -> Calibration:
        values = {name: Reliability(**stored[name]) if stored.get(name) else None for name in _RELIABILITY}
        return cls(**{**stored, **values, "threshold": float(stored["threshold"])})


_RELIABILITY = ("reliability_before", "reliability_after")


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the model's logits divided by T, up to a constant per image that softmax ignores."""
    logits = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), _FLOOR)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)


def untangle(probabilities: np.ndarray, targets: np.ndarray | list | None) -> np.ndarray:
    """The class probabilities ``p`` a model trained towards ``targets`` meant by its output ``p @ targets``:
    solved, floored at a millionth (an output below the targets' floor means "not this class") and summed to 1."""
    if targets is None:
        return np.asarray(probabilities)
    solved = np.asarray(probabilities, dtype=np.float64) @ np.linalg.inv(np.asarray(targets, dtype=np.float64))
    solved = np.maximum(solved, UNTANGLED_FLOOR)
    return solved / solved.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` (one number: accuracy is kept)."""
    from scipy.optimize import minimize_scalar

    log_p = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), _FLOOR))
    rows = np.arange(len(labels))

    def loss(log_temperature: float) -> float:
        logits = log_p / math.exp(log_temperature)
        logits -= logits.max(axis=1, keepdims=True)
        return float((np.log(np.exp(logits).sum(axis=1)) - logits[rows, labels]).mean())

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    return float(math.exp(minimize_scalar(loss, bounds=(low, high), method="bounded").x))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean gap between top-class confidence and accuracy over equal-width confidence bins, weighted by images."""
    table = reliability(probabilities, labels, bins)
    total = sum(table.images)
    return float(sum(n * abs(a - c) for c, a, n in zip(table.confidence, table.accuracy, table.images)) / max(total, 1))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    found = [b for b in range(bins) if np.any(index == b)]
    return Reliability(
        [float(confidence[index == b].mean()) for b in found],
        [float(correct[index == b].mean()) for b in found],
        [int((index == b).sum()) for b in found],
    )


def conformity_scores(probabilities: np.ndarray, labels: np.ndarray, ordinal: bool) -> np.ndarray:
    """How far down each image's ranking its true class lies: the smallest threshold whose set holds it."""
    if not ordinal:
        return 1.0 - probabilities[np.arange(len(labels)), labels]
    return _interval_masses(probabilities)[np.arange(len(labels)), labels]


def conformal_threshold(scores: np.ndarray, coverage: float) -> float:
    """The ceil((n + 1) * coverage)-th smallest score: sets at this threshold cover a new exchangeable image
    with probability at least ``coverage`` (infinity where there are too few images to promise it)."""
    rank = math.ceil((len(scores) + 1) * coverage)
    return float(np.sort(scores)[rank - 1]) if rank <= len(scores) else math.inf


def prediction_sets(probabilities: np.ndarray, threshold: float, ordinal: bool) -> np.ndarray:
    scores = _interval_masses(probabilities) if ordinal else 1.0 - probabilities
    held = scores <= threshold + 1e-9  # a calibration image's own score is in its set despite rounding
    held[np.arange(len(probabilities)), probabilities.argmax(axis=1)] = True
    return held


def set_text(class_names: list[str], held: np.ndarray, ordinal: bool = False) -> str:
    """A prediction set in words: "2-4" for a range of grades, else the class names joined by "|"."""
    chosen = [name for name, is_in in zip(class_names, held) if is_in]
    if ordinal and len(chosen) > 1:
        return f"{chosen[0]}-{chosen[-1]}"
    return "|".join(chosen)


def _interval_masses(probabilities: np.ndarray) -> np.ndarray:
    """For each image and grade, the probability of the range grown from the most likely grade (each step adds
    the more likely neighbour) just before that grade joins it (0 for the most likely grade): sets of grades
    whose mass is at most a threshold are contiguous and nested."""
    count, grades = probabilities.shape
    rows = np.arange(count)
    low = high = probabilities.argmax(axis=1)
    mass = probabilities[rows, low].astype(np.float64)
    masses = np.zeros((count, grades))
    for _ in range(grades - 1):
        below = np.where(low > 0, probabilities[rows, np.maximum(low - 1, 0)], -1.0)
        above = np.where(high < grades - 1, probabilities[rows, np.minimum(high + 1, grades - 1)], -1.0)
        down = below >= above
        low, high = np.where(down, low - 1, low), np.where(down, high, high + 1)
        added = np.where(down, low, high)
        masses[rows, added] = mass
        mass = mass + probabilities[rows, added]
    return masses


def fit(
    fit_probabilities: np.ndarray,
    fit_labels: np.ndarray,
    test_probabilities: np.ndarray,
    test_labels: np.ndarray,
    coverage: float,
    targets: np.ndarray | None,
    ordinal: bool,
    fitted_on: str,
) -> Calibration:
    """Fit the temperature (on the untangled probabilities) and the sets' threshold on one set of images;
    measure both on the test images."""
    stored_targets = None if targets is None or np.allclose(targets, np.eye(len(targets))) else targets.tolist()
    untangled = untangle(fit_probabilities, stored_targets)
    temperature = fit_temperature(untangled, fit_labels)
    threshold = conformal_threshold(
        conformity_scores(with_temperature(untangled, temperature), fit_labels, ordinal), coverage
    )
    calibrated = with_temperature(untangle(test_probabilities, stored_targets), temperature)
    sets = prediction_sets(calibrated, threshold, ordinal)
    sizes = sets.sum(axis=1)
    tested = len(test_labels) > 0
    return Calibration(
        temperature=temperature,
        coverage=coverage,
        threshold=threshold,
        ordinal=ordinal,
        fitted_on=fitted_on,
        calibration_images=len(fit_labels),
        test_images=len(test_labels),
        test_ece_before=expected_calibration_error(test_probabilities, test_labels) if tested else 0.0,
        test_ece_after=expected_calibration_error(calibrated, test_labels) if tested else 0.0,
        test_coverage=float(sets[np.arange(len(test_labels)), test_labels].mean()) if tested else 0.0,
        mean_set_size=float(sizes.mean()) if tested else 0.0,
        several_classes=float((sizes > 1).mean()) if tested else 0.0,
        reliability_before=reliability(test_probabilities, test_labels) if tested else None,
        reliability_after=reliability(calibrated, test_labels) if tested else None,
        targets=stored_targets,
    )
