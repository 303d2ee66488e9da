"""Builds that compile their model themselves, as KerasTuner's hypermodels and tutorials do.

automl-img trains every model with its own recipe (optimizer, schedule fitted to the trial's epochs, loss), so a
build's ``model.compile(...)`` is recorded and skipped, and the parameters a build declares only for it (after its
last layer, as ``HyperResNet``'s ``optimizer`` and ``learning_rate``) would change nothing: they are neither
searched nor stored, and take their defaults. Which names those are is learned once per process by building the
architecture at its defaults (``not_searched``), for builds that may compile (a KerasTuner object, or code that
calls ``compile``); the trial records them, and the search shows them.

Imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from automl_img.hypermodels import KerasTunerArchitecture
from automl_img.space import ArchitectureHyperParameters, DefaultHyperParameters, Distribution
from automl_img.tf_runtime import keras


@dataclass
class BuildWatch:
    """What a build did: how many layers it had created or called so far, and whether it compiled."""

    activity: int = 0
    compiled: bool = False
    declared: list[tuple[str, int]] = field(default_factory=list)  # (stored name, activity when declared)

    def after_last_layer(self) -> frozenset[str]:
        """Names declared after the build's last layer (and before its compile): they cannot change the model."""
        return frozenset(name for name, activity in self.declared if activity == self.activity)


@contextlib.contextmanager
def watched() -> Iterator[BuildWatch]:
    """While a build runs: ``Model.compile`` records instead of compiling, and each layer created or called
    counts as activity (a model's own construction does not: it comes between the layers and the compile)."""
    watch = BuildWatch()
    layer, model = keras.layers.Layer, keras.Model
    layer_init, layer_call, model_compile = layer.__init__, layer.__call__, model.compile

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        layer_init(self, *args, **kwargs)
        if not isinstance(self, model):
            watch.activity += 1

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        watch.activity += 1
        return layer_call(self, *args, **kwargs)

    def compile(self: Any, *args: Any, **kwargs: Any) -> None:
        watch.compiled = True

    layer.__init__, layer.__call__, model.compile = init, call, compile  # type: ignore[method-assign]
    try:
        yield watch
    finally:
        layer.__init__, layer.__call__, model.compile = layer_init, layer_call, model_compile  # type: ignore[method-assign]


class _Recording(DefaultHyperParameters):
    def __init__(self, watch: BuildWatch) -> None:
        super().__init__()
        self.watch = watch

    def _resolve(self, name: str, dist: Distribution, default: Any) -> Any:
        self.watch.declared.append((name, self.watch.activity))
        return super()._resolve(name, dist, default)


def may_compile(build: Any) -> bool:
    """A KerasTuner object, or code that mentions ``compile`` (the built-ins do not: they are not probed)."""
    if isinstance(build, KerasTunerArchitecture):
        return True
    try:
        return ".compile(" in inspect.getsource(build)
    except (OSError, TypeError):
        return True


@functools.cache
def not_searched(build: Any, shape: tuple[int, int, int], num_classes: int, family: str) -> frozenset[str]:
    """The stored names of the parameters ``build`` declares only for its own compile (empty if it does not
    compile): found by building it once at its defaults."""
    if not may_compile(build):
        return frozenset()
    with watched() as watch:
        build(ArchitectureHyperParameters(_Recording(watch), family), shape, num_classes)
    return watch.after_last_layer() if watch.compiled else frozenset()
