"""What ``automl-img search`` can be told, declared once: each field's default, help, flag and limits.

The command's options (cli.py) and ``automl_img.search()``'s keyword arguments (api.py) are made from
these fields, and every value is checked here (``check_value``), whichever way it came in.
"""

from __future__ import annotations

import shlex
import typing
from collections.abc import Sequence
from dataclasses import Field, dataclass, field, fields
from typing import Any

from automl_img.errors import StudyError
from automl_img.models.metrics import OBJECTIVES, ORDINAL_OBJECTIVES
from automl_img.models.precision import PRECISIONS
from automl_img.searching.samplers import PRUNERS, SAMPLERS
from automl_img.space import Override, Range
from automl_img.study.artifacts import ARTIFACTS_ENV
from automl_img.study.storage import STORAGE_ENV, redact

CLASS_WEIGHTS = ("auto", "on", "off")


@dataclass(frozen=True)
class Option:
    """How one field of SearchOptions is given and checked."""

    help: str
    minimum: int | None = None  # the smallest value allowed (the counts and the seconds: 1)
    choices: Sequence[str] = ()  # the names allowed
    kind: str = ""  # what the choices are, in messages ("objective")
    envvar: str | None = None  # read when the option is not given
    flag: str | None = None  # the command-line flag; default --NAME-WITH-DASHES

    def describe(self) -> str:
        """The help, with the choices where there are some."""
        if not self.choices:
            return self.help
        *first, last = self.choices
        return f"{self.help}: {', '.join(first)} or {last}." if first else f"{self.help}: {last}."


def _option(default: Any, help: str, **how: Any) -> Any:
    return field(default=default, metadata={"option": Option(help, **how)})


@dataclass(frozen=True)
class SearchOptions:
    """Everything ``automl-img search`` can be told."""

    source: str | None = None  #: DATA_DIR, the command's argument; None for a dataset plugin that needs none
    trials: int = _option(50, "Finished (completed or pruned) trials the study should reach.", minimum=1)
    timeout: float | None = _option(None, "Stop starting epochs after this many seconds.", minimum=1)
    study: str | None = _option(None, "Study name (default: the data folder's name).")
    dataset: str = _option("folder", "Dataset loader plugin (see `automl-img plugins`).")
    architecture: str = _option(
        "blog-cnn",
        "Architecture plugin (see `automl-img plugins`); several, comma-separated, "
        "make the family a searched parameter.",
    )
    seed: int | None = _option(None, "Fixes the split, the sampler and the Keras seeds.")
    epochs: int = _option(
        40,
        "Epochs of the longest trials. New configurations train for a ninth of them, the best "
        "again for a third, then all (40: 4, 13, 40 epochs).",
        minimum=1,
    )
    patience: int = _option(
        10, "Stop a trial after this many epochs without improvement in the second half of its schedule.", minimum=1
    )
    trial_timeout: float | None = _option(None, "Maximum seconds per trial.", minimum=1)
    max_failures: int = _option(5, "Stop after this many failed trials in a row.", minimum=1)
    objective: str | None = _option(
        None,
        "The val score trials are ranked by (default: accuracy, or qwk with --ordinal; qwk is quadratic "
        "weighted kappa, mae the mean absolute error in grades)",
        choices=tuple(OBJECTIVES),
        kind="objective",
    )
    ordinal: bool = _option(
        False,
        "The classes are ordered grades (named 0, 1, 2... or put in order by --class-order): ranked by QWK, "
        "ordinal training targets searched, prediction sets of neighbouring grades.",
    )
    class_order: str | None = _option(
        None, "The grades' class names, lowest first, comma-separated (implies --ordinal).", flag="--class-order"
    )
    exclude: str | None = _option(
        None,
        "A file of paths to leave out, relative to DATA_DIR, one per line (`automl-img audit` writes one); "
        "fixed when the study is created.",
    )
    sampler: str = _option("tpe", "Optuna sampler", choices=SAMPLERS, kind="sampler")
    pruner: str = _option(
        "median",
        "Stops weak trials early (median: below the median of the trials of the same epochs)",
        choices=PRUNERS,
        kind="pruner",
    )
    class_weights: str = _option(
        "auto",
        "Weigh the classes in the loss (auto: when the largest class has 1.5x the images of the smallest)",
        choices=CLASS_WEIGHTS,
        kind="class weights setting",
    )
    workers: int = _option(
        1,
        "Trials run at once on this machine, each in its own process (one per GPU where there are several).",
        minimum=1,
    )
    precision: str = _option(
        "auto",
        "Training precision; exported models are float32 (auto: bfloat16 where the CPU "
        "or GPU computes it natively, float16 on older GPUs, else float32)",
        choices=PRECISIONS,
        kind="precision",
    )
    #: the space narrowed: ``-p``/``--config`` on the command line, ``params``/``config`` in Python
    overrides: dict[str, Override] = field(default_factory=dict)
    artifacts: str | None = _option(
        None,
        "Where trials upload their weights, for export and report on any machine: a shared folder, or "
        "s3://BUCKET (credentials and AWS_ENDPOINT_URL from the environment). Kept in the study; without it, "
        "weights stay under studies/ of the machine that trained them.",
        envvar=ARTIFACTS_ENV,
    )
    storage: str | None = _option(
        None,
        "Optuna storage URL: sqlite:///FILE.db, postgresql://USER:PASS@HOST/DB or a journal FILE.log "
        "(default: sqlite:///studies/automl-img.db).",
        envvar=STORAGE_ENV,
    )

    def __post_init__(self) -> None:
        for name, value in self.given().items():
            check_value(name, value)
        if self.objective in ORDINAL_OBJECTIVES and not self.is_ordinal:
            raise StudyError(
                f"objective {self.objective} measures how far a miss is between ordered grades; "
                "add --ordinal (or --class-order) to say the classes are grades"
            )

    @property
    def is_ordinal(self) -> bool:
        return self.ordinal or self.class_order is not None

    @property
    def grade_order(self) -> list[str] | None:
        """The class order given, lowest grade first."""
        return [name.strip() for name in self.class_order.split(",") if name.strip()] if self.class_order else None

    @property
    def ranked_by(self) -> str:
        """The objective, or its default: QWK for grades (a miss by four grades costs 16 times one by one)."""
        return self.objective or ("qwk" if self.is_ordinal else "accuracy")

    def given(self) -> dict[str, Any]:
        """The options a user sets by name (every field but ``source`` and ``overrides``), with their values."""
        return {option.name: getattr(self, option.name) for option in declared()}

    def as_command(self) -> str:
        """The equivalent ``automl-img search`` command line (recorded with each trial, to reproduce it);
        the storage last, its password redacted."""
        words = ["automl-img", "search"] + ([self.source] if self.source else [])
        for name, override in self.overrides.items():
            words += ["-p", f"{name}={_text(override)}"]
        for option in sorted(declared(), key=lambda option: option.name == "storage"):
            value = getattr(self, option.name)
            if value is True:  # a switch
                words.append(flag_of(option))
            elif value != option.default:
                words += [flag_of(option), redact(value) if option.name == "storage" else str(value)]
        return shlex.join(words)


def declared() -> list[Field[Any]]:
    """SearchOptions' fields that are options of their own, in declaration order."""
    return [option for option in fields(SearchOptions) if "option" in option.metadata]


def field_named(name: str) -> Field[Any]:
    return next(option for option in declared() if option.name == name)


def how(option: Field[Any]) -> Option:
    rule: Option = option.metadata["option"]
    return rule


def flag_of(option: Field[Any]) -> str:
    return how(option).flag or f"--{option.name.replace('_', '-')}"


def value_type(name: str) -> type:
    """The field's type without its None: bool, int, float or str."""
    hint = typing.get_type_hints(SearchOptions)[name]
    kind: type = next(arg for arg in typing.get_args(hint) if arg is not type(None)) if typing.get_args(hint) else hint
    return kind


def check_value(name: str, value: Any) -> None:
    """Refuse a value the option does not allow, naming the option, the value and what is allowed."""
    option = field_named(name)
    allowed = what_is_allowed(option, value)
    if allowed is None:
        return
    if how(option).choices and isinstance(value, str):
        raise StudyError(f"unknown {how(option).kind} {value!r}; {allowed}")
    raise StudyError(f"{name}={value!r} is not allowed; {allowed}")


def what_is_allowed(option: Field[Any], value: Any) -> str | None:
    """None when ``value`` suits the option, else what would ("use 1 or more", "choose from ...")."""
    rule, kind = how(option), value_type(option.name)
    if value is None and option.default is None:
        return None
    if kind is bool:
        return None if isinstance(value, bool) else "use True or False"
    if kind is str:
        if not isinstance(value, str):
            return "give a name"
        return f"choose from {', '.join(rule.choices)}" if rule.choices and value not in rule.choices else None
    at_least = f"{rule.minimum} or more" if rule.minimum is not None else ""
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        return f"use {'a whole number' if kind is int else 'a number'}" + (f" of {at_least}" if at_least else "")
    return f"use {at_least}" if rule.minimum is not None and value < rule.minimum else None


def _text(override: Override) -> str:
    if isinstance(override, Range):
        return f"{override.low}..{override.high}"
    if isinstance(override, list):
        return ",".join(map(str, override))
    return str(override).lower() if isinstance(override, bool) else str(override)
