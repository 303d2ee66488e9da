"""KerasTuner's own objects as architectures: a ``keras_tuner.HyperModel`` (class, instance or ``functools.partial``
of a class) or a one-argument ``build(hp)`` function, registered as they are.

automl-img's contract is ``build(hp, input_shape, num_classes)``. KerasTuner's applications take the shape and
class count in their constructor (``HyperResNet(input_shape=..., classes=...)``), so a class is constructed per
build with them, and an instance is copied with them set; a ``build(hp)`` function gets them as keywords when it
names ``input_shape`` and ``classes`` (or ``num_classes``), else nothing. Nothing here imports KerasTuner or
TensorFlow: a HyperModel is recognised by its class's ancestry.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

from automl_img.errors import PluginError

# Builds augmentation layers, not a classifier: refused by name, with what to do instead.
AUGMENTATION_HYPERMODELS = {"HyperImageAugment"}


def is_hypermodel_class(obj: Any) -> bool:
    return inspect.isclass(obj) and any(
        base.__name__ == "HyperModel" and base.__module__.startswith("keras_tuner") for base in obj.__mro__
    )


def _hypermodel_class_of(obj: Any) -> type | None:
    """The HyperModel class behind a class, a partial of one, or an instance; None for anything else."""
    if isinstance(obj, functools.partial):
        return _hypermodel_class_of(obj.func)
    if is_hypermodel_class(obj):
        return obj
    return type(obj) if is_hypermodel_class(type(obj)) else None


def _takes(function: Any, name: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters  # by name only: a **kwargs passed on to HyperModel would refuse it


def _required_positional(function: Any) -> int | None:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds and p.default is p.empty for p in parameters)


class KerasTunerArchitecture:
    """A HyperModel or a ``build(hp)`` function behind automl-img's ``build(hp, input_shape, num_classes)``."""

    def __init__(self, original: Any) -> None:
        self.original = original
        self.__doc__ = inspect.getdoc(_hypermodel_class_of(original) or original) or ""

    def __call__(self, hp: Any, input_shape: tuple[int, int, int], num_classes: int) -> Any:
        given = {"input_shape": tuple(input_shape), "classes": num_classes}
        hypermodel = self._hypermodel(given)
        if hypermodel is None:  # a build(hp) function
            given["num_classes"] = num_classes
            return self.original(hp, **{name: value for name, value in given.items() if _takes(self.original, name)})
        augmentation = getattr(hypermodel, "augmentation_model", None)
        if _hypermodel_class_of(augmentation) is not None and hasattr(augmentation, "input_shape"):
            # a HyperModel that builds its own input layer: the same shape
            hypermodel.augmentation_model = copy.copy(augmentation)
            hypermodel.augmentation_model.input_shape = given["input_shape"]
        return hypermodel.build(hp)

    def _hypermodel(self, given: dict[str, Any]) -> Any:
        """A HyperModel for this shape and class count: constructed from a class (or partial), or a copy of an
        instance with them set; None for a function."""
        original, constructor = self.original, _hypermodel_class_of(self.original)
        if constructor is None:
            return None
        if inspect.isclass(original) or isinstance(original, functools.partial):
            preset = original.keywords if isinstance(original, functools.partial) else {}
            return original(
                **{name: value for name, value in given.items() if name not in preset and _takes(constructor, name)}
            )
        copied = copy.copy(original)
        for name, value in given.items():
            if hasattr(copied, name):
                setattr(copied, name, value)
        return copied

    def __repr__(self) -> str:
        return f"KerasTunerArchitecture({self.original!r})"


def as_architecture(implementation: Any, what: str) -> Any:
    """What the search calls as ``build(hp, input_shape, num_classes)`` for what a plugin registered (``what``
    names it in an error: the plugin and the architecture's name)."""
    hypermodel = _hypermodel_class_of(implementation)
    if hypermodel is not None:
        if hypermodel.__name__ in AUGMENTATION_HYPERMODELS:
            raise PluginError(
                f"{what} is KerasTuner's {hypermodel.__name__}, which builds augmentation layers, not "
                "a classifier. automl-img searches its own augmentation (rotation, zoom, shifts, flips, erasing) in "
                "the input pipeline, so exported models carry none of it; register a classifier, or give "
                f"{hypermodel.__name__} to one as its augmentation_model= (HyperEfficientNet takes one)"
            )
        return KerasTunerArchitecture(implementation)
    if callable(implementation) and _required_positional(implementation) == 1:
        return KerasTunerArchitecture(implementation)  # KerasTuner's build(hp)
    return implementation
