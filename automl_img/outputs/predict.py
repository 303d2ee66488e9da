"""predict: load an exported bundle and classify image files or folders with it."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from automl_img.data.decode import DECODE_VERSION, UnreadableImage, fit_image, load_image, to_rgb_uint8
from automl_img.data.imageset import IMAGE_EXTENSIONS, is_image_path
from automl_img.errors import AutomlImgError, DataError
from automl_img.hookspecs import Predictor
from automl_img.outputs.bundle import BundleManifest
from automl_img.outputs.calibration import set_text
from automl_img.plugins import Registry

BATCH = 256


@dataclass(frozen=True)
class Prediction:
    path: str
    class_name: str
    probability: float  #: calibrated, where the bundle is
    probabilities: dict[str, float]
    prediction_set: list[str]  #: the classes that may be true at the bundle's coverage (the class alone: sure)
    expected_grade: float | None = None  #: grades: the mean grade under the probabilities (0 = the first class)

    @property
    def unsure(self) -> bool:
        return len(self.prediction_set) > 1


class Bundle:
    """An exported model, in any format the bundle holds, with the preprocessing and class names it needs."""

    def __init__(self, folder: str | os.PathLike, registry: Registry, format: str = "keras", safe_mode: bool = True):
        self.folder = Path(folder)
        self.manifest = BundleManifest.read(self.folder)
        self.class_names = self.manifest.class_names
        self.image_size, self.channels = self.manifest.image_size, self.manifest.channels
        exporter = registry.exporter(format)
        if not (self.folder / exporter.file).exists():
            written = ", ".join(self.manifest.formats) or "keras"
            raise AutomlImgError(
                f"{self.folder} has no {format} model (it has: {written}); "
                f"export it with `automl-img export-best --format {format}`"
            )
        #: the format's own probabilities for uint8 images of the bundle's size, before calibration
        self.model_probabilities: Predictor = exporter.load(self.folder / exporter.file, safe_mode=safe_mode)
        calibration = self.manifest.calibration
        self.predict_arrays: Predictor = (
            self.model_probabilities
            if calibration is None
            else lambda images: calibration.apply(self.model_probabilities(images))
        )
        self.safe_mode = safe_mode
        if self.manifest.preprocessing.decode != DECODE_VERSION:
            warnings.warn(
                f"{self.folder} was exported by an automl-img that decoded 16-bit grayscale images by their full "
                "range and read no DICOM: this one windows them, so predictions on such files may differ from what "
                "it was trained on; export it again from its study",
                stacklevel=2,
            )

    def predict_files(self, files: list[Path]) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Predictions for readable files, and ``(path, reason)`` for the others."""
        return self._predict([(str(path), path) for path in files])

    def predict(self, images: Any) -> Any:
        """Classify files, folders, numpy arrays or PIL images, or a list of them, in the order given.

        Arrays are uint8 (16-bit and float in [0, 1] are scaled), RGB or grayscale: (height, width),
        (height, width, 1-4 channels), or a batch with one more axis in front; they are resized as files are.
        Returns a pandas DataFrame where pandas is installed (columns image, class, probability, set, for grades
        the expected grade, then one per class), else a list of ``Prediction``. Probabilities are calibrated;
        the set holds the true class with the bundle's coverage (``manifest.calibration``). Unreadable files are
        left out, with a warning naming them.
        """
        predictions, unreadable = self._predict(_named_images(images))
        if unreadable:
            import warnings

            from automl_img.study.config import describe_skips

            warnings.warn(f"skipped unreadable {describe_skips(unreadable)}", stacklevel=2)
        try:
            import pandas
        except ImportError:
            return predictions
        frame = pandas.DataFrame(
            [[p.path, p.class_name, p.probability, self.set_text(p), *p.probabilities.values()] for p in predictions],
            columns=[
                "image",
                "class",
                "probability",
                "set",
                *(
                    name
                    if name not in ("image", "class", "probability", "set", "expected grade")
                    else f"probability of {name}"
                    for name in self.class_names
                ),
            ],
        )
        if self.manifest.ordinal:
            frame.insert(4, "expected grade", [p.expected_grade for p in predictions])
        frame.attrs["unreadable"] = unreadable
        return frame

    def set_text(self, prediction: Prediction) -> str:
        """The prediction's set in words: "2-3" for grades, else class names joined by "|"."""
        calibration = self.manifest.calibration
        held = np.isin(self.class_names, prediction.prediction_set)
        return set_text(self.class_names, held, calibration is not None and calibration.ordinal)

    def explain(self, images: Any, method: str = "occlusion") -> np.ndarray:
        """Maps of where the evidence for the predicted class lies: (N, size, size) float arrays in [0, 1] at the
        bundle's image size, for files, folders, arrays or PIL images as ``predict`` takes them (unreadable files
        raise). ``method``: "occlusion" (the whole model asked, about 230 forward passes an image) or "grad-cam"
        (one backward pass; an averaged bundle's map is the mean of its members'). Uses the bundle's Keras model,
        whatever ``format`` predicts."""
        from automl_img.outputs.explain import METHODS

        if method not in METHODS:
            raise DataError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
        decoded = [(name, self._decode(image)) for name, image in _named_images(images)]
        bad = [f"{name}: {reason}" for name, reason in decoded if isinstance(reason, str)]
        if bad:
            raise DataError(f"cannot explain unreadable images: {'; '.join(bad)}")
        return METHODS[method](self.keras_model, np.stack([image for _, image in decoded]))

    def write_explanations(self, files: list[Path], folder: Path) -> list[Path]:
        """An overlay per readable file (the map over the image at its own size), named after it, in ``folder``."""
        from automl_img.data.decode import read_image
        from automl_img.outputs.explain import occlusion, overlay

        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for start in range(0, len(files), BATCH):
            originals = []  # each file decoded once: the overlay at its own size, the map from its fitted pixels
            for path in files[start : start + BATCH]:
                try:
                    originals.append((path, read_image(path)))
                except UnreadableImage:
                    continue  # predict already lists it as unreadable
            if not originals:
                continue
            fitted = np.stack([fit_image(image, self.image_size, self.channels) for _, image in originals])
            for (path, image), cam in zip(originals, occlusion(self.keras_model, fitted)):
                target = folder / f"{_flat_name(path)}.png"
                cv2.imwrite(str(target), cv2.cvtColor(overlay(image, cam), cv2.COLOR_RGB2BGR))
                written.append(target)
        return written

    @functools.cached_property
    def keras_model(self) -> Any:
        from automl_img.tf_runtime import keras

        return keras.saving.load_model(self.folder / self.manifest.model, safe_mode=self.safe_mode)

    def _predict(self, named: list[tuple[str, Path | np.ndarray]]) -> tuple[list[Prediction], list[tuple[str, str]]]:
        predictions: list[Prediction] = []
        unreadable: list[tuple[str, str]] = []
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            for start in range(0, len(named), BATCH):
                chunk = named[start : start + BATCH]
                decoded = list(pool.map(self._decode, [image for _, image in chunk]))
                good = [(name, image) for (name, _), image in zip(chunk, decoded) if isinstance(image, np.ndarray)]
                unreadable += [(name, reason) for (name, _), reason in zip(chunk, decoded) if isinstance(reason, str)]
                if not good:
                    continue
                probabilities = self.predict_arrays(np.stack([image for _, image in good]))
                sets = self._sets(probabilities)
                for (name, _), row, held in zip(good, probabilities, sets):
                    best = int(row.argmax())
                    predictions.append(
                        Prediction(
                            name,
                            self.class_names[best],
                            float(row[best]),
                            dict(zip(self.class_names, map(float, row))),
                            [class_name for class_name, is_in in zip(self.class_names, held) if is_in],
                            float(row @ np.arange(len(row))) if self.manifest.ordinal else None,
                        )
                    )
        return predictions, unreadable

    def _sets(self, probabilities: np.ndarray) -> np.ndarray:
        """Each image's prediction set; the top class alone in a bundle exported before sets existed."""
        if self.manifest.calibration is not None:
            return self.manifest.calibration.sets(probabilities)
        return np.eye(len(self.class_names), dtype=bool)[probabilities.argmax(axis=1)]

    def _decode(self, image: Path | np.ndarray) -> np.ndarray | str:
        if isinstance(image, np.ndarray):
            return fit_image(to_rgb_uint8(image), self.image_size, self.channels)
        try:
            return load_image(image, self.image_size, self.channels)
        except UnreadableImage as exc:
            return str(exc)

    def __repr__(self) -> str:
        return (
            f"<automl-img bundle {self.folder}: {len(self.class_names)} classes, {self.image_size} px, "
            f"{'grayscale' if self.channels == 1 else 'RGB'}>"
        )


def _named_images(images: Any) -> list[tuple[str, Path | np.ndarray]]:
    """Every image given, in order, with the name its prediction shows: a path, or ``array N`` in memory."""
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    named: list[tuple[str, Path | np.ndarray]] = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            named += [(str(path), path) for path in collect_images([item])]
        else:
            named += [(f"array {len(named) + n}", image) for n, image in enumerate(_arrays(item))]
    if not named:
        raise DataError("no images given: pass image files, folders, numpy arrays or PIL images")
    return named


def _arrays(item: Any) -> list[np.ndarray]:
    """One in-memory image or a batch of them, as (height, width, channels) arrays."""
    if hasattr(item, "getbands") and hasattr(item, "convert"):  # a PIL image, without importing PIL
        return [_from_pil(item)]
    if not isinstance(item, np.ndarray):
        raise DataError(
            f"cannot classify a {type(item).__name__}: pass image files, folders, numpy arrays or "
            "PIL images, or a list of them"
        )
    if item.dtype.kind not in "uif" or item.size == 0:
        raise DataError(
            f"an image array must hold numbers (uint8, uint16 or floats in [0, 1]); got an empty or "
            f"{item.dtype} array of shape {item.shape}"
        )
    if item.ndim == 2 or (item.ndim == 3 and item.shape[2] <= 4):
        return [item]
    if item.ndim in (3, 4) and (item.ndim == 3 or item.shape[3] <= 4):
        return list(item)  # a batch: (n, height, width) grayscale or (n, height, width, channels)
    raise DataError(
        f"an image array must be (height, width), (height, width, channels) with 1 to 4 channels, or "
        f"a batch of them (n, height, width[, channels]); got shape {item.shape}"
    )


def _from_pil(image: Any) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale (X-rays); PIL's "I" holds it as int32
        return np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    if image.mode not in ("L", "LA", "RGB", "RGBA", "F"):
        image = image.convert("RGBA" if "transparency" in image.info or image.mode in ("P", "PA") else "RGB")
    return np.asarray(image)


def _flat_name(path: Path) -> str:
    """A file name for ``path``'s overlay: its path with separators as "__" (two images of one name stay apart)."""
    return "__".join(part for part in path.with_suffix("").parts if part not in ("/", "..", "."))


def collect_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files among ``paths``; folders are searched recursively, in name order."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path} does not exist")
    if not found:
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(map(str, paths))}")
    return found
