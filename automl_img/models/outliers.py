"""Images far from every class: a screenshot, a scan of the wrong body part, a photograph of the label.

Each image's score is its mean cosine distance to its ``NEIGHBOURS`` nearest other images in the pretrained
backbone's feature space (the k-nearest-neighbour outlier score, Ramaswamy, Rastogi & Shim 2000), whatever their
class: an image that looks like some class's images has near neighbours there. An image is an outlier when its
score lies beyond Tukey's far-out fence over the folder's scores (the third quartile plus ``FENCE`` times the
interquartile range): a fence that follows each folder's own spread, not a distance fixed on one dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 5  # a few strays that look alike (a handful of screenshots) still stand apart
FENCE = 3.0  # Tukey's "far out"
BLOCK = 256  # rows of the similarity matrix at a time: memory ~ 8 x BLOCK x images bytes (200 MB for 100,000)


@dataclass(frozen=True)
class Outlier:
    row: int
    score: float  #: mean cosine distance to its NEIGHBOURS nearest images
    fence: float  #: the folder's fence it lies beyond


def outliers(features: np.ndarray) -> list[Outlier]:
    """The rows of ``features`` (images x dimensions) beyond the fence, the furthest first."""
    if len(features) <= NEIGHBOURS + 1:
        return []
    unit = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)
    scores = np.empty(len(unit), dtype=np.float32)
    for start in range(0, len(unit), BLOCK):
        similarity = unit[start : start + BLOCK] @ unit.T
        similarity[np.arange(len(similarity)), np.arange(start, start + len(similarity))] = -np.inf  # not itself
        nearest = np.partition(-similarity, NEIGHBOURS - 1, axis=1)[:, :NEIGHBOURS]
        scores[start : start + BLOCK] = 1.0 + nearest.mean(axis=1)  # 1 - mean similarity
    low, high = np.percentile(scores, [25, 75])
    fence = float(high + FENCE * (high - low))
    far = np.flatnonzero(scores > fence)
    return [Outlier(int(row), float(scores[row]), fence) for row in far[np.argsort(-scores[far])]]
