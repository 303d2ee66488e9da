"""The search space: the ``hp`` object (KerasTuner's vocabulary, backed by Optuna) and the training parameters."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard, TypeVar, cast, overload

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from automl_img.errors import StudyError

IMAGE_SIZE_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256)
MAX_DEFAULT_IMAGE_SIZES = 5
# Trial 0 trains at no more than this: a trial's cost grows with the square of the side, so the first
# exportable model of 1024 px X-rays comes 16x sooner at 64 px than at 256.
FIRST_TRIAL_MAX_IMAGE_SIZE = 64
# The defaults are queued again at the largest candidate up to each of these sizes: the first rung of the
# search then compares resolutions on one configuration, so a grade decided by a detail a few pixels wide at
# 224 px is seen before the budget is spent at 64 px (architectures trade width for resolution, blog-cnn's
# ``convs_per_block``, so a 128 px default costs about what a 64 px one does).
STARTING_IMAGE_SIZE_STEPS = (128, 256)
# The defaults are also queued once without the affine warp, at the largest starting size up to 128 px: resampling
# a rotated, zoomed or shifted image blurs a detail a pixel wide. On the fine-detail development set
# (benchmarks/finedetail.py) 4-epoch trials of the defaults at 128 px scored val 0.800 / 0.745 / 0.808 without the
# warp and 0.623 / 0.780 / 0.730 with it (seeds 0-2), and at 224 px 0.778 against 0.413 (the majority class).
WARP_PARAMETERS = ("rotation", "zoom", "width_shift", "height_shift")
DEFAULT_WEIGHT_DECAY = 0.01
DEFAULT_ERASING = 0.0


FAMILY_PARAM = "architecture"  # in a study of several architectures: which one a trial builds

# Parameters that trials stored before they existed did not sample, with the value those trials used:
# their studies still export, report and resume.
ADDED_LATER: dict[str, Any] = {
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "erasing": 0.0,
    "head": "flatten",
    "convs_per_block": 1,
    "stem": "none",
}  # head, convs_per_block, stem: blog-cnn's


@dataclass(frozen=True)
class Range:
    """An override that narrows a numeric parameter to ``low..high``."""

    low: float
    high: float


Override = Range | list | bool | int | float | str
# The distributions a parameter is declared with (``HyperParameters``' methods) and narrowed to (``_narrow``).
Distribution = IntDistribution | FloatDistribution | CategoricalDistribution
_T = TypeVar("_T")


class HyperParameters:
    """KerasTuner's ``HyperParameters`` vocabulary; subclasses decide where values come from."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.not_searched: dict[str, Any] = {}  # an architecture's compile-only parameters, at their defaults
        self._conditions: list[tuple[str, list]] = []
        self._scopes: list[str] = []

    def Int(
        self,
        name: str,
        min_value: int,
        max_value: int,
        step: int | None = None,
        sampling: str = "linear",
        default: int | None = None,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> int | None:
        log = sampling in ("log", "reverse_log")
        dist = IntDistribution(int(min_value), int(max_value), log=log, step=1 if log else int(step or 1))
        return self._value(name, dist, parent_name, parent_values, default)

    def Float(
        self,
        name: str,
        min_value: float,
        max_value: float,
        step: float | None = None,
        sampling: str = "linear",
        default: float | None = None,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> float | None:
        log = sampling in ("log", "reverse_log")
        dist = FloatDistribution(float(min_value), float(max_value), log=log, step=None if log else step)
        return self._value(name, dist, parent_name, parent_values, default)

    def Choice(
        self,
        name: str,
        values: Sequence[Any],
        ordered: bool | None = None,
        default: Any = None,
        parent_name: str | None = None,
        parent_values: Any = None,
    ) -> Any:
        return self._value(name, CategoricalDistribution(list(values)), parent_name, parent_values, default)

    def Boolean(
        self, name: str, default: bool = False, parent_name: str | None = None, parent_values: Any = None
    ) -> bool | None:
        return self._value(name, CategoricalDistribution([False, True]), parent_name, parent_values, default)

    def Fixed(self, name: str, value: Any, parent_name: str | None = None, parent_values: Any = None) -> Any:
        return self._value(name, CategoricalDistribution([value]), parent_name, parent_values, value)

    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values: Any) -> Iterator[None]:
        """Parameters declared inside are active only while ``parent_name`` has one of ``parent_values``."""
        self._conditions.append((self._scoped(parent_name), _as_list(parent_values)))
        try:
            yield
        finally:
            self._conditions.pop()

    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Parameters declared inside are named ``name/PARAMETER`` (scopes nest), as in KerasTuner."""
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    def get(self, name: str) -> Any:
        full = self._scoped(name)
        if full not in self.values:
            raise KeyError(f"{full!r} has not been declared yet")
        return self.values[full]

    def _scoped(self, name: str) -> str:
        return "/".join([*self._scopes, name])

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def _value(
        self, name: str, dist: Distribution, parent_name: str | None, parent_values: Any, default: Any = None
    ) -> Any:
        name = self._scoped(name)
        conditions = self._conditions + ([(self._scoped(parent_name), _as_list(parent_values))] if parent_name else [])
        if not all(self.values.get(parent) in allowed for parent, allowed in conditions):
            return None  # as KerasTuner does: an inactive parameter has no value to rely on
        value = self._resolve(name, dist, default)
        self.values[name] = value
        return value

    def _resolve(self, name: str, dist: Distribution, default: Any) -> Any:
        raise NotImplementedError


class ArchitectureHyperParameters(HyperParameters):
    """An architecture's view of the trial's parameters. A name the search itself declares (the training
    recipe's ``learning_rate``, ``batch_size``..., the image size, the family) is stored as ``FAMILY/NAME``
    when the architecture declares it: an L2 penalty declared as ``weight_decay`` is stored as
    ``FAMILY/weight_decay``, and both coexist. Other names are stored as declared.

    Names in ``compile_only`` (stored names: the parameters a build declares only for its own compile, which
    automl-img's recipe replaces) take their defaults and are neither searched nor stored: they are listed in the
    inner ``not_searched``."""

    def __init__(self, inner: HyperParameters, family: str, compile_only: frozenset[str] = frozenset()) -> None:
        self.inner, self.family, self.compile_only = inner, family or "architecture", compile_only

    @property
    def values(self) -> dict[str, Any]:  # type: ignore[override]  # the inner's values, read through
        return self.inner.values

    def own(self, name: str) -> str:
        """The stored name of the architecture's parameter ``name`` (inside a name scope: scoped as declared)."""
        searched = name in recipe_parameters() or name.startswith("image_size") or name == FAMILY_PARAM
        return f"{self.family}/{name}" if searched and not self.inner._scopes else name

    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        with self.inner.name_scope(name):
            yield

    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values: Any) -> Iterator[None]:
        with self.inner.conditional_scope(self.own(parent_name), parent_values):
            yield

    def get(self, name: str) -> Any:
        stored = self.inner._scoped(self.own(name))
        return self.inner.not_searched[stored] if stored in self.inner.not_searched else self.inner.get(self.own(name))

    def _value(
        self, name: str, dist: Distribution, parent_name: str | None, parent_values: Any, default: Any = None
    ) -> Any:
        stored = self.inner._scoped(self.own(name))
        if stored in self.compile_only:
            value = self.inner.not_searched[stored] = DefaultHyperParameters()._resolve(stored, dist, default)
            return value
        parent = self.own(parent_name) if parent_name else None
        return self.inner._value(self.own(name), dist, parent, parent_values, default)


@functools.cache
def recipe_parameters() -> frozenset[str]:
    """Every name ``sample_training_params`` declares, in any stage."""
    names: set[str] = set()
    for stage in (Stage.FULL, Stage.HEAD, Stage.FINE_TUNE):
        declared = DefaultHyperParameters()
        sample_training_params(declared, 32, stage)
        names |= set(declared.values)
    return frozenset(names)


class TrialHyperParameters(HyperParameters):
    """Values sampled by an Optuna trial, narrowed or fixed by the user's overrides."""

    def __init__(self, trial: Any, overrides: dict[str, Override] | None = None) -> None:
        super().__init__()
        self.trial = trial
        self.overrides = overrides or {}

    def _resolve(self, name: str, dist: Distribution, default: Any) -> Any:
        if name in self.overrides:
            dist = _narrow(name, dist, self.overrides[name])
        if isinstance(dist, IntDistribution):
            return self.trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        if isinstance(dist, FloatDistribution):
            return self.trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        return self.trial.suggest_categorical(name, dist.choices)

    def unused_overrides(self) -> list[str]:
        return sorted(set(self.overrides) - set(self.values))


class StoredHyperParameters(HyperParameters):
    """Values a finished trial stored: rebuilds its model from parameters alone."""

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__()
        self.params = params

    def _resolve(self, name: str, dist: Distribution, default: Any) -> Any:
        if name not in self.params and name in ADDED_LATER:
            return ADDED_LATER[name]
        if name not in self.params:
            raise StudyError(
                f"the stored trial has no value for {name!r}: the architecture changed since the trial ran; "
                "install the plugin version the study used"
            )
        return self.params[name]


class DefaultHyperParameters(HyperParameters):
    """Every parameter at its declared default (trial 0 of a new study), within the user's overrides."""

    def __init__(self, overrides: dict[str, Override] | None = None) -> None:
        super().__init__()
        self.overrides = overrides or {}

    def _resolve(self, name: str, dist: Distribution, default: Any) -> Any:
        if name in self.overrides:
            dist = _narrow(name, dist, self.overrides[name])
        if isinstance(dist, CategoricalDistribution):
            return default if default in dist.choices else dist.choices[0]
        value = dist.low if default is None else min(max(default, dist.low), dist.high)
        return int(value) if isinstance(dist, IntDistribution) else float(value)


def _as_list(values: Any) -> list:
    return list(values) if isinstance(values, (list, tuple, set)) else [values]


@overload
def _narrow(name: str, dist: CategoricalDistribution, override: Override) -> CategoricalDistribution: ...
@overload
def _narrow(name: str, dist: Distribution, override: Override) -> Distribution: ...
def _narrow(name: str, dist: Distribution, override: Override) -> Distribution:
    if isinstance(override, list):
        return CategoricalDistribution(override)
    if not isinstance(override, Range):
        return CategoricalDistribution([override])
    if isinstance(dist, IntDistribution):
        return IntDistribution(
            int(override.low), int(override.high), log=dist.log, step=dist.step if not dist.log else 1
        )
    if isinstance(dist, FloatDistribution):
        return FloatDistribution(override.low, override.high, log=dist.log, step=dist.step)
    inside = [c for c in dist.choices if isinstance(c, (int, float)) and override.low <= c <= override.high]
    if not inside:
        raise StudyError(f"no choice of {name!r} ({dist.choices}) lies in {override.low}..{override.high}")
    return CategoricalDistribution(inside)


@dataclass(frozen=True)
class TrainingParams:
    """What every trial samples besides its architecture's own parameters."""

    image_size: int
    batch_size: int
    learning_rate: float  # the peak, after warm-up; the schedule ends at zero (training.compile_for)
    weight_decay: float  # AdamW's, decoupled
    label_smoothing: float
    rotation: float = 0.0  # degrees, either way
    zoom: float = 0.0  # fraction, in or out
    width_shift: float = 0.0  # fraction of the width, either way
    height_shift: float = 0.0
    horizontal_flip: bool = False
    erasing: float = 0.0  # the probability that a random rectangle of an image is replaced by noise
    # Pretrained backbones whose top layers train: the peak rate for that second stage, after the head
    # trained alone at ``learning_rate``; None for every other trial.
    fine_tune_learning_rate: float | None = None
    # Grades: train towards soft ordinal targets (probability falling off with the distance from the true grade,
    # ``training.ordinal_targets``) instead of one-hot ones. Searched only in ordinal studies.
    ordinal_targets: bool = False

    @property
    def warps(self) -> bool:
        """Whether the affine warp (rotation, zoom, shifts, flip) has anything to do."""
        return any((self.rotation, self.zoom, self.width_shift, self.height_shift, self.horizontal_flip))

    @property
    def augments(self) -> bool:
        return self.warps or bool(self.erasing)

    def without_augmentation(self) -> TrainingParams:
        """For a head that trains on fixed features before its backbone is fine-tuned."""
        return dataclasses.replace(
            self,
            rotation=0.0,
            zoom=0.0,
            width_shift=0.0,
            height_shift=0.0,
            horizontal_flip=False,
            erasing=0.0,
            fine_tune_learning_rate=None,
        )


class Stage:
    """How a trial trains, which decides the training parameters it has (``training.stage_of``)."""

    FULL = "full"  # every weight trains on augmented images
    HEAD = "head"  # a frozen pretrained backbone: only the head trains, on cached features, no augmentation
    FINE_TUNE = "fine-tune"  # the head first, then the backbone's top layers too, on augmented images


def sample_image_size(hp: HyperParameters, image_sizes: Sequence[int], name: str = "image_size") -> int:
    """Declared before the architecture's parameters: it is built for that size. The default (trial 0) is cheap."""
    return hp.Choice(name, list(image_sizes), ordered=True, default=first_trial_image_size(image_sizes))


def sample_training_params(
    hp: HyperParameters, image_size: int, stage: str = Stage.FULL, ordinal: bool = False
) -> TrainingParams:
    """Declare the training parameters. The ranges stop where every search on our development data lost:
    peak learning rates near 1e-2, rotations past 15 degrees, strong shifts, zoom and erasing (the blog's
    30-degree rotation and 0.2 zoom lie outside; ``-p rotation=30`` still asks for them).

    The defaults (trial 0) are AdamW peaking at 2e-3, label smoothing 0.1 and light augmentation: strong
    augmentation cost accuracy in every search on our development data. A head trained on cached features
    sees no augmentation, so it declares none.
    """
    common = dict(
        image_size=image_size,
        batch_size=hp.Choice("batch_size", [16, 32, 64, 128], ordered=True, default=64),
        learning_rate=hp.Float("learning_rate", 3e-4, 5e-3, sampling="log", default=2e-3),
        weight_decay=hp.Float("weight_decay", 1e-4, 0.1, sampling="log", default=DEFAULT_WEIGHT_DECAY),
        label_smoothing=hp.Float("label_smoothing", 0.0, 0.2, default=0.1),
        ordinal_targets=ordinal and hp.Choice("targets", ["one-hot", "ordinal"], default="ordinal") == "ordinal",
    )
    if stage == Stage.HEAD:
        return TrainingParams(**common)
    return TrainingParams(
        **common,
        rotation=_active(hp.Float("rotation", 0.0, 15.0, default=5.0)),
        zoom=_active(hp.Float("zoom", 0.0, 0.15, default=0.05)),
        width_shift=_active(hp.Float("width_shift", 0.0, 0.1, default=0.05)),
        height_shift=_active(hp.Float("height_shift", 0.0, 0.1, default=0.05)),
        horizontal_flip=_active(hp.Boolean("horizontal_flip", default=False)),
        erasing=_active(hp.Float("erasing", 0.0, 0.3, default=DEFAULT_ERASING)),
        # Pretrained weights move little: a tenth of the usual rates (Keras' transfer-learning guide uses 1e-5).
        fine_tune_learning_rate=hp.Float("fine_tune_learning_rate", 1e-5, 1e-3, sampling="log", default=1e-4)
        if stage == Stage.FINE_TUNE
        else None,
    )


def _active(value: _T | None) -> _T:
    """A value declared outside any conditional scope: only an inactive parameter has None."""
    assert value is not None, "a training parameter was declared inside an inactive conditional scope"
    return value


def starting_image_sizes(
    image_sizes: Sequence[int], override: Override | None = None, name: str = "image_size"
) -> list[int]:
    """The sizes the defaults are queued at, cheapest first: trial 0's, then the largest candidate up to each of
    STARTING_IMAGE_SIZE_STEPS above it (224 px images: 64, 128, 224; 28 px images: 28 alone), among the
    candidates the user's ``override`` leaves."""
    if override is not None:
        narrowed = _narrow(name, CategoricalDistribution(list(image_sizes)), override)
        # ints: a range keeps some of the candidates, a list or a value gives the user's own sizes
        image_sizes = cast("tuple[int, ...]", narrowed.choices)
    sizes = [first_trial_image_size(image_sizes)]
    for step in STARTING_IMAGE_SIZE_STEPS:
        larger = [size for size in image_sizes if sizes[-1] < size <= step]
        if larger:
            sizes.append(max(larger))
    return sizes


def unwarped_start_size(starting_sizes: Sequence[int]) -> int:
    """The starting size the defaults are queued at without the warp: the largest up to STARTING_IMAGE_SIZE_STEPS[0]."""
    return _largest_up_to(starting_sizes, STARTING_IMAGE_SIZE_STEPS[0])


def first_trial_image_size(image_sizes: Sequence[int]) -> int:
    """The largest candidate up to FIRST_TRIAL_MAX_IMAGE_SIZE; the smallest when every candidate is larger."""
    return _largest_up_to(image_sizes, FIRST_TRIAL_MAX_IMAGE_SIZE)


def _largest_up_to(sizes: Sequence[int], limit: int) -> int:
    cheap = [size for size in sizes if size <= limit]
    return max(cheap) if cheap else min(sizes)


def default_image_sizes(native_size: int, min_image_size: int | None = None) -> list[int]:
    """Candidates no larger than the images themselves (28 px stays 28 px), the largest few kept; at least
    ``min_image_size`` (a pretrained backbone's), to which smaller images are enlarged."""
    if min_image_size and native_size < min_image_size:
        return [min_image_size]
    sizes = [size for size in IMAGE_SIZE_LADDER if size <= native_size and size >= (min_image_size or 0)]
    if native_size <= IMAGE_SIZE_LADDER[-1] and native_size not in sizes:
        sizes.append(native_size)
    return sizes[-MAX_DEFAULT_IMAGE_SIZES:]


def parse_override(text: str) -> tuple[str, Override]:
    """``name=0.4`` fixes, ``name=16,32`` chooses, ``name=1e-4..1e-2`` narrows a range."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise StudyError(f"cannot read parameter {text!r}; write NAME=VALUE, NAME=A,B,C or NAME=LOW..HIGH")
    if ".." in spec:
        low, _, high = spec.partition("..")
        low_value, high_value = _scalar(low), _scalar(high)
        if not (_is_number(low_value) and _is_number(high_value)) or low_value > high_value:
            raise StudyError(f"cannot read range {spec!r} for {name}; write LOW..HIGH with numbers, LOW <= HIGH")
        return name, Range(low_value, high_value)
    if "," in spec:
        return name, [_scalar(part) for part in spec.split(",") if part.strip()]
    return name, _scalar(spec)


def load_overrides(config: Path) -> dict[str, Override]:
    """Read ``[params]`` from a TOML study config: scalars fix, lists choose, ``{min, max}`` narrows."""
    try:
        table = tomllib.loads(Path(config).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"config file {config} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"config file {config} is not valid TOML: {exc}") from None
    unknown = set(table) - {"params"}
    if unknown:
        raise StudyError(f"{config}: unknown table(s) {sorted(unknown)}; only [params] is read")
    return overrides_from(table.get("params", {}), f"{config}: params.")


def overrides_from(params: Mapping[str, Any], where: str = "") -> dict[str, Override]:
    """Overrides from a mapping (a TOML ``[params]`` table, a Python dict): values fix, lists choose,
    ``{"min": ..., "max": ...}`` narrows a range."""
    overrides: dict[str, Override] = {}
    for name, spec in params.items():
        if isinstance(spec, Mapping):
            if set(spec) != {"min", "max"}:
                raise StudyError(f"{where}{name} must be a value, a list, or {{min = ..., max = ...}}; got {spec!r}")
            overrides[name] = Range(spec["min"], spec["max"])
        elif isinstance(spec, (list, tuple)):
            overrides[name] = list(spec)
        elif isinstance(spec, (bool, int, float, str)):
            overrides[name] = spec
        else:
            raise StudyError(f"{where}{name} must be a value, a list, or {{min = ..., max = ...}}; got {spec!r}")
    return overrides


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar(text: str) -> bool | int | float | str:
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            break
        return value
    return text
