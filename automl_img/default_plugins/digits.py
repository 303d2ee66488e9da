"""The ``digits`` demo: scikit-learn's bundled handwritten digits, written out as PNG class folders."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from automl_img.data.imageset import ImageSet, list_image_folder
from automl_img.hookspecs import hookimpl

DEFAULT_FOLDER = Path("studies/datasets/digits")


@hookimpl
def register_dataset_loaders(register):
    register("digits", load_digits)


def load_digits(source: str | None) -> ImageSet:
    """scikit-learn's 1,797 handwritten digits (8x8 px, 10 classes) as PNG files; DATA_DIR optional."""
    folder = Path(source) if source else DEFAULT_FOLDER
    if not folder.exists():
        write_digits(folder)
    return list_image_folder(folder)


def write_digits(folder: str | Path, per_class: int | None = None) -> Path:
    """Write the digits as ``folder/<digit>/<n>.png`` (8-bit grayscale); optionally only ``per_class`` each."""
    import cv2
    import numpy as np
    from sklearn.datasets import load_digits as sklearn_digits

    folder = Path(folder)
    digits = sklearn_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so an interrupted first run never leaves half a dataset.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    written: dict[int, int] = {}
    for index, (image, label) in enumerate(zip(pixels, digits.target)):
        if per_class is not None and written.get(label, 0) >= per_class:
            continue
        written[label] = written.get(label, 0) + 1
        (staging / str(label)).mkdir(exist_ok=True)
        cv2.imwrite(str(staging / str(label) / f"{index:04d}.png"), image)
    try:
        staging.rename(folder)
    except OSError:  # another process wrote it first
        shutil.rmtree(staging)
    return folder
