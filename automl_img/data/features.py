"""Frozen-backbone features, computed once per (backbone weights, image size, dataset content) and kept
memory-mapped on disk beside the decoded pixels: head-only trials then train on vectors in seconds.

Training a frozen backbone without augmentation is the same as training its head on these features.

Features an audit computed for the same files (``automl-img audit``: EfficientNet-Lite0 at 64 px) are taken
instead of computed again, where the trial's extractor gives the same vectors on a sample of them (same backbone,
size and pixels; float16 storage and bfloat16 arithmetic move them by a few per cent, another image by half).
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from automl_img.atomic import atomic_path

Progress = Callable[[int, int], None]  # (images done, images in all)
Known = Callable[[], dict[int, np.ndarray]]  # features computed elsewhere, by row: read only when computing
_BATCH = 128
_SAMPLE = 8  # known features checked against the extractor's own before any is used
# The largest relative L2 distance between the two on any sampled image. Measured with Lite0 at 64 px: a trial's
# bfloat16 features lie 0.03-0.065 from the audit's float32 ones; another image's lie 0.52 or more, the same image's
# at 56 or 72 px 0.36 or more.
_AGREEMENT = 0.15


def weights_digest(model) -> str:
    """Changes with any of the network's weights or shapes (another weights file, another preset).

    Layer names are left out: Keras numbers unnamed layers per process."""
    digest = hashlib.sha256(f"{model.input_shape} {model.output_shape}".encode())
    for array in model.get_weights():
        digest.update(f"{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def load_features(
    extractor, images: np.ndarray, pixels_file: Path, progress: Progress | None = None, known: Known | None = None
) -> np.ndarray:
    """The extractor's output for every row of ``images`` (the memory-mapped pixel cache in ``pixels_file``),
    computed on first use and stored next to it; a read-only memory map. ``known`` rows are taken from there when
    they agree with the extractor (``reusable``).

    A second process asking for the same features waits for the first one's and reads them.
    """
    target = pixels_file.with_name(f"{pixels_file.stem}-features-{weights_digest(extractor)}.npy")
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            with atomic_path(target) as partial:
                _compute_into(
                    partial, extractor, images, progress, reusable(extractor, images, known() if known else {})
                )
    return np.load(target, mmap_mode="r")


def reusable(extractor, images: np.ndarray, known: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """``known`` if the extractor computes the same vectors for a sample of its rows, else nothing."""
    if not known:
        return {}
    rows = sorted(known)
    sample = rows[:: max(1, len(rows) // _SAMPLE)][:_SAMPLE]
    own = _extract(extractor, images[sample])
    given = np.stack([known[row] for row in sample]).astype(np.float32)
    if own.shape != given.shape:
        return {}
    distance = np.linalg.norm(own - given, axis=1) / np.maximum(np.linalg.norm(own, axis=1), 1e-12)
    return known if float(distance.max()) <= _AGREEMENT else {}


def _compute_into(
    partial: Path, extractor, images: np.ndarray, progress: Progress | None, known: dict[int, np.ndarray]
) -> None:
    total = len(images)
    features = np.lib.format.open_memmap(
        partial, mode="w+", dtype=np.float32, shape=(total, *extractor.output_shape[1:])
    )
    for row, vector in known.items():
        features[row] = vector
    missing = np.array([row for row in range(total) if row not in known], dtype=np.int64)
    for start in range(0, len(missing), _BATCH):
        rows = missing[start : start + _BATCH]
        features[rows] = _extract(extractor, images[rows])
        if progress:
            progress(len(known) + start + len(rows), total)
    features.flush()


def _extract(extractor, images: np.ndarray) -> np.ndarray:
    return np.asarray(extractor(np.asarray(images), training=False), dtype=np.float32)
