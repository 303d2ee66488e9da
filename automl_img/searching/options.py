"""What ``automl-img search`` can be told: one record, from the command line to the trial process."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields

from automl_img.errors import StudyError
from automl_img.metrics import OBJECTIVES
from automl_img.precision import PRECISIONS
from automl_img.searching.samplers import PRUNERS, SAMPLERS
from automl_img.space import Override, Range
from automl_img.study.storage import redact

CLASS_WEIGHTS = ("auto", "on", "off")


@dataclass(frozen=True)
class SearchOptions:
    """Everything ``automl-img search`` can be told (each field's ``flag`` is its command-line option)."""

    source: str | None = field(default=None, metadata={"flag": None})  #: DATA_DIR, the argument
    dataset: str = "folder"
    architecture: str = "blog-cnn"
    study: str | None = None
    trials: int = 50
    timeout: float | None = None
    epochs: int = 40
    patience: int = 10
    trial_timeout: float | None = None
    max_consecutive_failures: int = field(default=5, metadata={"flag": "--max-failures"})
    seed: int | None = None
    objective: str = "accuracy"
    sampler: str = "tpe"
    pruner: str = "median"
    class_weights: str = "auto"  #: auto: on when the largest class is 1.5x the smallest or more; on; off
    workers: int = 1  #: trials run at once on this machine (one per GPU where there are several)
    precision: str = "auto"  #: training precision; auto: bfloat16 or float16 where the hardware has it natively
    overrides: dict[str, Override] = field(default_factory=dict, metadata={"flag": "-p"})
    artifacts: str | None = None  #: a folder or s3://BUCKET every worker reaches; None: trial weights stay local
    storage: str | None = None  #: last on the command line, its password redacted

    def check(self) -> None:
        """Refuse unknown names before anything is opened."""
        for kind, value, known in (("objective", self.objective, OBJECTIVES), ("sampler", self.sampler, SAMPLERS),
                                   ("pruner", self.pruner, PRUNERS),
                                   ("class weights setting", self.class_weights, CLASS_WEIGHTS),
                                   ("precision", self.precision, PRECISIONS)):
            if value not in known:
                raise StudyError(f"unknown {kind} {value!r}; choose from {', '.join(known)}")
        if self.workers < 1:
            raise StudyError(f"--workers {self.workers} is not allowed; use 1 or more")

    def as_command(self) -> str:
        """The equivalent ``automl-img search`` command line (recorded with each trial, to reproduce it)."""
        words = ["automl-img", "search"] + ([self.source] if self.source else [])
        for option in fields(self):
            value, flag = getattr(self, option.name), option.metadata.get("flag", f"--{option.name.replace('_', '-')}")
            if flag is None or value == option.default or (option.name == "overrides" and not value):
                continue
            if option.name == "overrides":
                words += [word for name, override in value.items() for word in ("-p", f"{name}={_text(override)}")]
            else:
                words += [flag, redact(value) if option.name == "storage" else str(value)]
        return shlex.join(words)


def _text(override: Override) -> str:
    if isinstance(override, Range):
        return f"{override.low}..{override.high}"
    if isinstance(override, list):
        return ",".join(map(str, override))
    return str(override).lower() if isinstance(override, bool) else str(override)
