"""Hook specifications, and the contracts of what a plugin registers through them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import numpy as np

    from automl_img.data.imageset import ImageSet
    from automl_img.space import HyperParameters

hookspec = pluggy.HookspecMarker("automl_img")
hookimpl = pluggy.HookimplMarker("automl_img")


class DatasetLoader(Protocol):
    """Lists the images of ``source`` (a path, or None for a built-in set) without decoding them."""

    def __call__(self, source: str | None) -> ImageSet: ...


class Architecture(Protocol):
    """Builds a ``keras.Model`` from float images in [0, 1] of ``input_shape`` to ``num_classes`` softmax scores,
    declaring every choice through ``hp``."""

    def __call__(self, hp: HyperParameters, input_shape: tuple[int, int, int], num_classes: int) -> Any: ...


Predictor = Callable[["np.ndarray"], "np.ndarray"]  # uint8 image batch -> class probabilities


class Exporter(Protocol):
    """Writes a model in one format and loads it back as a predictor."""

    file: str  #: the file or folder name inside the bundle
    # Optional: ``quantized = True`` makes export-best call ``export(model, path, calibration_images=...)`` with
    # training images, and judge the format by its test accuracy instead of by exact probabilities.

    def export(self, model: Any, path: Path) -> None: ...

    def load(self, path: Path, safe_mode: bool = True) -> Predictor: ...


class RegisterDatasetLoader(Protocol):
    def __call__(self, name: str, load: DatasetLoader) -> None: ...


class RegisterArchitecture(Protocol):
    def __call__(
        self, name: str, build: Architecture, channels: int | None = None, min_image_size: int | None = None
    ) -> None: ...


class RegisterExporter(Protocol):
    def __call__(self, name: str, exporter: Exporter) -> None: ...


@hookspec
def register_dataset_loaders(register: RegisterDatasetLoader) -> None:
    """Register dataset loaders: ``register(name, load)``."""


@hookspec
def register_architectures(register: RegisterArchitecture) -> None:
    """Register architectures: ``register(name, build, channels=None, min_image_size=None)``; ``channels=3`` asks
    for RGB input, ``min_image_size`` for images enlarged to at least that many pixels (pretrained backbones).
    ``build`` may also be a KerasTuner HyperModel (class, instance or partial of a class) or a ``build(hp)``
    function (``automl_img.hypermodels``)."""


@hookspec
def register_exporters(register: RegisterExporter) -> None:
    """Register export formats: ``register(name, exporter)``."""
