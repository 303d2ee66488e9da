"""Scores computed from predicted probabilities: the search objectives and the export report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# name -> whether larger is better
OBJECTIVES = {
    "accuracy": True,
    "balanced_accuracy": True,
    "macro_f1": True,
    "loss": False,
    "qwk": True,  # quadratic weighted kappa: agreement beyond chance, a miss weighted by its distance squared
    "mae": False,  # mean absolute error, in grades
}
ORDINAL_OBJECTIVES = ("qwk", "mae")  # they read class indices as grades


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Every objective at once; cheap next to the forward pass that made the probabilities."""
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score

    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "loss": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()),
        "qwk": _kappa(cohen_kappa_score, labels, predicted),
        "mae": float(np.abs(predicted - labels).mean()) if len(labels) else 0.0,
    }


def _kappa(cohen_kappa_score, labels: np.ndarray, predicted: np.ndarray) -> float:
    """Quadratic weighted kappa; 0 where it is undefined (one class in both, as a tiny val split may be)."""
    if len(labels) == 0 or (len(set(labels.tolist()) | set(predicted.tolist())) < 2):
        return 0.0
    return float(np.nan_to_num(cohen_kappa_score(labels, predicted, weights="quadratic")))


@dataclass(frozen=True)
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int  #: test images of the class


@dataclass(frozen=True)
class TestReport:
    """Scores on the test split, per class, and the confusion matrix (rows: true class)."""

    images: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    loss: float
    per_class: dict[str, ClassScores]
    confusion_matrix: list[list[int]]
    qwk: float = 0.0  #: bundles before ordinal labels: 0
    mae: float = 0.0

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> TestReport:
        per_class = {name: ClassScores(**row) for name, row in stored["per_class"].items()}
        return cls(**{**stored, "per_class": per_class})


def report(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> TestReport:
    """Scores, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes = np.arange(len(class_names))
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=classes, zero_division=0)
    return TestReport(
        **scores(labels, probabilities),
        images=len(labels),
        per_class={
            name: ClassScores(float(p), float(r), float(f), int(s))
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        confusion_matrix=confusion_matrix(labels, predicted, labels=classes).tolist(),
    )
