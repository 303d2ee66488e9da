"""Frozen-backbone features, computed once per (backbone weights, image size, dataset content) and kept
memory-mapped on disk beside the decoded pixels: head-only trials then train on vectors in seconds.

Training a frozen backbone without augmentation is the same as training its head on these features.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from automl_img.atomic import atomic_path

Progress = Callable[[int, int], None]  # (images done, images in all)
_BATCH = 128


def weights_digest(model) -> str:
    """Changes with any of the network's weights or shapes (another weights file, another preset).

    Layer names are left out: Keras numbers unnamed layers per process."""
    digest = hashlib.sha256(f"{model.input_shape} {model.output_shape}".encode())
    for array in model.get_weights():
        digest.update(f"{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def load_features(extractor, images: np.ndarray, pixels_file: Path, progress: Progress | None = None) -> np.ndarray:
    """The extractor's output for every row of ``images`` (the memory-mapped pixel cache in ``pixels_file``),
    computed on first use and stored next to it; a read-only memory map.

    A second process asking for the same features waits for the first one's and reads them.
    """
    target = pixels_file.with_name(f"{pixels_file.stem}-features-{weights_digest(extractor)}.npy")
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            with atomic_path(target) as partial:
                _compute_into(partial, extractor, images, progress)
    return np.load(target, mmap_mode="r")


def _compute_into(partial: Path, extractor, images: np.ndarray, progress: Progress | None) -> None:
    total = len(images)
    features = np.lib.format.open_memmap(
        partial, mode="w+", dtype=np.float32, shape=(total, *extractor.output_shape[1:])
    )
    for start in range(0, total, _BATCH):
        stop = min(start + _BATCH, total)
        features[start:stop] = np.asarray(extractor(np.asarray(images[start:stop]), training=False))
        if progress:
            progress(stop, total)
    features.flush()
