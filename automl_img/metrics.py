"""Scores computed from predicted probabilities: the search objectives and the export report."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# name -> whether larger is better
OBJECTIVES = {"accuracy": True, "balanced_accuracy": True, "macro_f1": True, "loss": False}


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Every objective at once; cheap next to the forward pass that made the probabilities."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(labels)), labels]
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "loss": float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()),
    }


def report(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> dict:
    """Scores, per-class precision/recall/F1/support and the confusion matrix (rows: true class)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes = np.arange(len(class_names))
    predicted = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    return {
        **scores(labels, probabilities),
        "images": int(len(labels)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
    }
