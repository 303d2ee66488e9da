"""Hook specifications: what a plugin may implement."""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("automl_img")
hookimpl = pluggy.HookimplMarker("automl_img")


@hookspec
def register_dataset_loaders(register: Callable[..., None]) -> None:
    """Register loaders: ``register(name, load)`` where ``load(source: str | None) -> ImageSet``."""


@hookspec
def register_architectures(register: Callable[..., None]) -> None:
    """Register architectures: ``register(name, build, channels=None)``, ``build(hp, input_shape, num_classes)``."""


@hookspec
def register_exporters(register: Callable[..., None]) -> None:
    """Register export formats: ``register(name, exporter)``; ``exporter.file``, ``.export(model, path)``, ``.load(path)``."""
