"""What the search loop hands a trial runner, and what it hears back: typed records, picklable."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field

from automl_img import errors
from automl_img.plugins import PluginSource
from automl_img.searching.options import SearchOptions
from automl_img.study.config import StudyConfig, StudyData


@dataclass(frozen=True)
class TrialSpec:
    """Everything a runner needs to run the study's next trial (pickled into a trial process)."""

    options: SearchOptions
    study_name: str
    config: StudyConfig
    data: StudyData  # with the cache's fingerprint already taken: the files are stat'ed once per search
    plugins: PluginSource
    sampler_seed: int | None = None  # reseeded per trial, so a resumed study never replays its trials
    deadline: float | None = None  # time.time() after which no epoch starts (the search's --timeout)
    device: str | None = None  # the one GPU this trial process sees (CUDA_VISIBLE_DEVICES), where there are GPUs
    search_pid: int = field(default_factory=os.getpid)  # the search process that made this spec


@dataclass(frozen=True)
class TrialReport:
    """How a trial ended, as the code that ran it tells: which trial, and how it ended when not by Optuna's rules."""

    number: int | None = None
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    fatal: tuple[str, str] | None = None  # (error class name, message) of a user-facing error
    interrupted: bool = False


@dataclass
class TrialRun:
    """What the search loop learned from one run of a trial."""

    number: int | None = None
    exit_code: int | None = None  # the trial process's; 0 for a trial run in the search's own process
    fatal: errors.AutomlImgError | None = None
    interrupted: bool = False
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def take(self, report: TrialReport) -> None:
        self.number, self.unreadable = report.number, report.unreadable
        self.interrupted = self.interrupted or report.interrupted
        if report.fatal is not None:
            kind, message = report.fatal
            self.fatal = getattr(errors, kind, errors.AutomlImgError)(message)


class Stop(enum.Enum):
    """What ended a search."""

    TRIALS = "the study has its trials"
    ELSEWHERE = "the last trials run on other workers"
    TAKEN = "other workers took the last trials"
    TIME = "the time limit"
    FAILURES = "failed trials in a row"
    INTERRUPTED = "Ctrl-C"


@dataclass(frozen=True)
class StopReason:
    """Why a search stopped starting trials: the kind, and the sentence the displays print."""

    kind: Stop
    text: str

    def __str__(self) -> str:
        return self.text

    @property
    def ok(self) -> bool:
        """The budget was spent as asked: not interrupted, not stopped by failing trials."""
        return self.kind not in (Stop.INTERRUPTED, Stop.FAILURES)


INTERRUPTED = StopReason(Stop.INTERRUPTED, "interrupted (Ctrl-C)")
