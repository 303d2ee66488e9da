"""Images far from every class: a screenshot, a scan of the wrong body part, a photograph of the label.

An image's distance to a class is its mean cosine distance to the ``NEIGHBOURS`` nearest images of that class in
the pretrained backbone's features (a k-nearest-neighbour outlier score, Ramaswamy, Rastogi & Shim 2000, taken
per class); its score is the least of these over the classes. Per class, because strays alike (twenty noise
images, a batch of screenshots) are each other's nearest images: over the whole folder, 20 planted noise images
among fashion-mnist-6k's 8,000 scored like the rest. An image is an outlier when its score lies beyond
``FENCE`` interquartile ranges above the third quartile of the folder's scores (Tukey's fence), a threshold that
follows each folder's own spread. ``FENCE`` is the lowest of 1.5, 2 and 3 that flagged no more than 0.5 % of
the clean fashion-mnist-6k (benchmarks/audit.py --outliers): 2 flagged 24 of its 8,000 images (3: 1, 1.5: 88).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 20  # per class: fewer strays than this that look alike still stand apart
FENCE = 2.0
BLOCK = 256  # rows of the similarity matrix at a time: memory ~ 8 x BLOCK x images bytes (200 MB for 100,000)


@dataclass(frozen=True)
class Outlier:
    row: int
    score: float  #: mean cosine distance to its NEIGHBOURS nearest images of the class nearest to it
    fence: float  #: the folder's fence it lies beyond


def outliers(features: np.ndarray, labels: np.ndarray) -> list[Outlier]:
    """The rows of ``features`` (images x dimensions; ``labels`` their classes) beyond the fence, furthest first."""
    if len(features) < 4:
        return []
    unit = features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)
    order = np.argsort(labels, kind="stable")  # each class's images side by side: a slice of the columns
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    slices = list(zip([0, *bounds], [*bounds, len(order)]))
    columns = unit[order].T
    scores = np.empty(len(unit), dtype=np.float32)
    for start in range(0, len(unit), BLOCK):
        similarity = unit[start : start + BLOCK] @ columns
        similarity[np.arange(len(similarity)), position[start : start + BLOCK]] = -np.inf  # not itself
        distances = []
        for low, high in slices:
            count = min(NEIGHBOURS, high - low - 1)  # its own class holds the image itself, left out above
            if count >= 1:
                nearest = -np.partition(-similarity[:, low:high], count - 1, axis=1)[:, :count]
                distances.append(1.0 - nearest.mean(axis=1))
        if not distances:
            return []  # every class a single image
        scores[start : start + BLOCK] = np.min(distances, axis=0)
    low, high = np.percentile(scores, [25, 75])
    fence = float(high + FENCE * (high - low))
    far = np.flatnonzero(scores > fence)
    return [Outlier(int(row), float(scores[row]), fence) for row in far[np.argsort(-scores[far])]]
