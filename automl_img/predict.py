"""predict: load an exported bundle and classify image files or folders with it."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from automl_img.bundle import BundleManifest
from automl_img.data.decode import UnreadableImage, load_image
from automl_img.data.imageset import IMAGE_EXTENSIONS
from automl_img.errors import AutomlImgError, DataError
from automl_img.plugins import Registry

BATCH = 256


@dataclass(frozen=True)
class Prediction:
    path: str
    class_name: str
    probability: float
    probabilities: dict[str, float]


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
            raise AutomlImgError(f"{self.folder} has no {format} model (it has: {written}); "
                                 f"export it with `automl-img export-best --format {format}`")
        self.predict_arrays = exporter.load(self.folder / exporter.file, safe_mode=safe_mode)

    def predict_files(self, files: list[Path]) -> tuple[list[Prediction], list[tuple[str, str]]]:
        """Predictions for readable files, and ``(path, reason)`` for the others."""
        predictions: list[Prediction] = []
        unreadable: list[tuple[str, str]] = []
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            for start in range(0, len(files), BATCH):
                chunk = files[start:start + BATCH]
                decoded = list(pool.map(self._decode, chunk))
                good = [(path, image) for path, image in zip(chunk, decoded) if isinstance(image, np.ndarray)]
                unreadable += [(str(path), reason) for path, reason in zip(chunk, decoded) if isinstance(reason, str)]
                if not good:
                    continue
                probabilities = self.predict_arrays(np.stack([image for _, image in good]))
                for (path, _), row in zip(good, probabilities):
                    best = int(row.argmax())
                    predictions.append(Prediction(str(path), self.class_names[best], float(row[best]),
                                                  dict(zip(self.class_names, map(float, row)))))
        return predictions, unreadable

    def _decode(self, path: Path) -> np.ndarray | str:
        try:
            return load_image(path, self.image_size, self.channels)
        except UnreadableImage as exc:
            return str(exc)


def collect_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files among ``paths``; folders are searched recursively, in name order."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path} does not exist")
    if not found:
        raise DataError(f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {', '.join(map(str, paths))}")
    return found
