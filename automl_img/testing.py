"""Contract tests for plugin authors: check a dataset loader or an architecture the way automl-img uses it.

In your plugin's test suite::

    from automl_img.testing import ArchitectureContract, DatasetLoaderContract

    class TestMyNet(ArchitectureContract):
        build = staticmethod(build_my_net)

    class TestMyLoader(DatasetLoaderContract):
        load = staticmethod(load_my_csv)
        source = "tests/data/labels.csv"

or call ``check_architecture(build)`` / ``check_dataset_loader(load, source)`` directly; each raises
AssertionError naming the broken promise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from automl_img.data import ImageSet, UnreadableImage, read_image


def check_dataset_loader(load: Callable[[str | None], Any], source: str | None, sample: int = 20) -> ImageSet:
    """The loader returns an ImageSet of existing, decodable files with labels for at least two classes."""
    image_set = load(source)
    assert isinstance(image_set, ImageSet), f"load() returned {type(image_set).__name__}, not automl_img.ImageSet"
    assert len(image_set) > 0, "the image set is empty"
    assert len(image_set.paths) == len(image_set.labels), "one label per path is required"
    assert len(image_set.class_names) >= 2, "a classifier needs at least two classes"
    assert len(set(image_set.class_names)) == len(image_set.class_names), "class names must be unique"
    labels = np.asarray(image_set.labels)
    assert labels.min() >= 0 and labels.max() < len(image_set.class_names), "labels must index class_names"
    if image_set.parts is not None:
        assert set(image_set.parts) <= {"train", "val", "test"}, "parts must be train, val or test"
        assert len(image_set.parts) == len(image_set.paths), "one part per path is required"
    for path in image_set.paths[:: max(1, len(image_set) // sample)][:sample]:
        file = image_set.absolute(path)
        assert file.is_file(), f"{file} does not exist"
        try:
            read_image(file)
        except UnreadableImage as exc:
            raise AssertionError(f"{file}: {exc}") from None
    return image_set


def check_architecture(
    build: Callable[..., Any],
    input_shape: tuple[int, int, int] = (16, 16, 1),
    num_classes: int = 3,
    trials: int = 3,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Builds for sampled parameters, outputs probabilities, trains a step, rebuilds from stored parameters.

    ``overrides`` fixes parameters as ``-p NAME=VALUE`` does (a local weights file, say)."""
    import optuna

    from automl_img.hypermodels import as_architecture
    from automl_img.models import training
    from automl_img.space import StoredHyperParameters, TrialHyperParameters

    build = as_architecture(build, "the architecture")  # a KerasTuner HyperModel or build(hp), as registered
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, *input_shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=8)
    for _ in range(trials):
        trial = study.ask()
        # build_model wraps the architecture exactly as a search does and checks its outputs.
        model = training.build_model(
            build, TrialHyperParameters(trial, overrides), input_shape[0], input_shape[2], num_classes
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        history = model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][-1]), "the loss of one training step is not finite"
        probabilities = np.asarray(model.predict(images, verbose=0))
        assert probabilities.shape == (8, num_classes), f"predict() gave shape {probabilities.shape}"
        stored = dict(trial.params)
        study.tell(trial, 0.0)
        rebuilt = training.build_model(
            build, StoredHyperParameters(stored), input_shape[0], input_shape[2], num_classes
        )
        shapes = [w.shape for w in model.get_weights()]
        assert [w.shape for w in rebuilt.get_weights()] == shapes, (
            "rebuilding from the stored parameters gave different weights: declare every choice through hp"
        )
        rebuilt.set_weights(model.get_weights())
        np.testing.assert_allclose(
            np.asarray(rebuilt.predict(images, verbose=0)),
            probabilities,
            atol=1e-5,
            err_msg="the rebuilt model predicts differently with the same weights",
        )


class ArchitectureContract:
    """Subclass with ``build = staticmethod(your_build)``; pytest then runs the contract."""

    build: Callable[..., Any] | None = None
    input_shapes: tuple[tuple[int, int, int], ...] = ((16, 16, 1), (24, 24, 3))
    overrides: dict[str, Any] | None = None

    def test_architecture_contract(self) -> None:
        assert self.build is not None, "set build = staticmethod(your_build_function)"
        for shape in self.input_shapes:
            check_architecture(self.build, input_shape=shape, overrides=self.overrides)


class DatasetLoaderContract:
    """Subclass with ``load = staticmethod(your_load)`` and ``source``; pytest then runs the contract."""

    load: Callable[[str | None], Any] | None = None
    source: str | None = None

    def test_dataset_loader_contract(self) -> None:
        assert self.load is not None, "set load = staticmethod(your_load_function)"
        check_dataset_loader(self.load, self.source)
