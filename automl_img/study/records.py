"""What a trial stores about itself: one typed record over Optuna's user attributes, read and written here only."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Worker:
    """Where a trial ran: its machine, its trial process and the search process that started it."""

    host: str
    pid: int
    pid_started: str | None  #: the process's start time since boot; tells a reused pid apart
    search_pid: int

    @classmethod
    def this_process(cls, search_pid: int) -> Worker:
        return cls(
            host=socket.gethostname(), pid=os.getpid(), pid_started=_process_start(os.getpid()), search_pid=search_pid
        )

    def ended_on_this_machine(self) -> bool:
        """This machine's process that ran the trial no longer exists (its pid gone or reused)."""
        if self.host != socket.gethostname():
            return False
        return _process_start(self.pid) != self.pid_started or not _alive(self.pid)


def _process_start(pid: int) -> str | None:
    """The process's start time since boot (tells a reused pid apart); None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class EpochRow:
    """One epoch of a trial's training: its train loss and every objective's val score.

    Stored flat, as ``{"epoch": 1, "train_loss": ..., "val_accuracy": ..., "val_loss": ...}``."""

    epoch: int  #: 1-based
    train_loss: float
    val: dict[str, float]  #: objective name (accuracy, balanced_accuracy, macro_f1, loss) -> its val score

    def stored(self) -> dict[str, float]:
        return {"epoch": self.epoch, "train_loss": self.train_loss, **{f"val_{k}": v for k, v in self.val.items()}}

    @classmethod
    def of(cls, row: dict[str, Any]) -> EpochRow:
        val = {name.removeprefix("val_"): value for name, value in row.items() if name.startswith("val_")}
        return cls(int(row.get("epoch", 0)), float(row.get("train_loss", math.nan)), val)


@dataclass(frozen=True)
class TrialRecord:
    """One trial as automl-img sees it: Optuna's outcome plus what the trial wrote about itself.

    Each attribute after ``intermediate_values`` is stored as an Optuna user attribute of the same name.
    """

    number: int
    state: TrialState
    value: float | None
    params: dict[str, Any]
    intermediate_values: dict[int, float]
    worker: Worker | None = None
    surplus: bool = False  #: not run: other workers had already taken the study's trials
    fail_reason: str | None = None
    seed: int | None = None  #: the Keras seed the trial trained with
    command: str | None = None  #: the ``automl-img search`` command line that ran it
    history: list[EpochRow] = field(default_factory=list)  #: one row per epoch: train loss, val scores
    stopped_by: str | None = None  #: why training ended: max epochs, patience, pruned, a time limit
    seconds: float | None = None  #: training time
    resident_mb: float | None = None  #: the trial process's memory after training
    best_epoch: int | None = None  #: 1-based; its weights are the ones kept
    val_scores: dict[str, float] | None = None  #: every objective on val at the best epoch
    weights: str | None = None  #: the best epoch's weights, relative to the study's folder
    weights_artifact: str | None = None  #: their id in the study's artifact store, where it has one
    epochs: int | None = None  #: the epochs its learning-rate schedule spans: its fidelity level
    promoted_from: int | None = None  #: the shorter trial whose configuration it trains for longer
    unwarped_start: bool = False  #: queued at the start: the defaults without the affine warp (space.WARP_PARAMETERS)
    train_images: int | None = None  #: images per epoch: a subset at the lowest level when there are many
    forward_gflop: float | None = None  #: one image's forward pass through its model: with images and epochs, its cost
    time_limited: bool = False  #: failed only because the study's time limit cut it short or left too little to start
    #: its architecture's parameters for its own compile, which the recipe replaces: at their defaults, not searched
    not_searched: list[str] = field(default_factory=list)
    precision: str | None = None  #: what it trained in (float32, bfloat16, float16); None: float32, before the option

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        stored = {name: trial.user_attrs[name] for name in _STORED if name in trial.user_attrs}
        if isinstance(stored.get("worker"), dict):
            stored["worker"] = Worker(**stored["worker"])
        stored["history"] = [EpochRow.of(row) for row in stored.get("history", [])]
        return cls(
            number=trial.number,
            state=trial.state,
            value=trial.value,
            params=dict(trial.params),
            intermediate_values=dict(trial.intermediate_values),
            **stored,
        )

    @property
    def finished(self) -> bool:
        """Completed or pruned: counts toward the study's ``--trials``."""
        return self.state in FINISHED

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def image_size(self) -> int | None:
        """The image size it trained at (``image_size``, or its family's ``image_size_<family>``)."""
        return next((value for name, value in self.params.items() if name.startswith("image_size")), None)


def completed_value(trial: TrialRecord) -> float:
    """The value of a trial that has one: a completed trial of a single-objective study always does."""
    assert trial.value is not None, f"trial #{trial.number} ({trial.state.name}) has no value"
    return trial.value


def ranked(trials: Iterable[TrialRecord], larger_is_better: bool) -> list[TrialRecord]:
    """The completed trials among ``trials``, best first; of equal values, the earlier trial first.
    The one definition of "best" (the study's best trial, each size's and each family's, promotions, displays)."""
    completed = [trial for trial in trials if trial.state == TrialState.COMPLETE and trial.value is not None]
    sign = -1 if larger_is_better else 1
    return sorted(completed, key=lambda trial: (sign * completed_value(trial), trial.number))


_OPTUNA_FIELDS = ("number", "state", "value", "params", "intermediate_values")
_STORED = tuple(f.name for f in fields(TrialRecord) if f.name not in _OPTUNA_FIELDS)


def write(trial: optuna.Trial, **values: Any) -> None:
    """Store fields of the trial's record (names and meanings as in ``TrialRecord``)."""
    for name, value in values.items():
        trial.set_user_attr(name, _encoded(name, value))


def read(trial: optuna.Trial, name: str) -> Any:
    """One stored field of a running trial's record (None while unset)."""
    _encoded(name, None)  # refuses a name that is not a stored field
    return trial.user_attrs.get(name)


def enqueue(study: optuna.Study, params: dict[str, Any], skip_if_exists: bool = False, **values: Any) -> None:
    """Queue a trial with these parameters and record fields; the next trial to start takes it."""
    study.enqueue_trial(
        params,
        user_attrs={name: _encoded(name, value) for name, value in values.items()},
        skip_if_exists=skip_if_exists,
    )


def write_to_storage(storage: optuna.storages.BaseStorage, study_name: str, number: int, **values: Any) -> None:
    """Like ``write``, for a trial whose process is gone (through the storage's public interface)."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)
    for name, value in values.items():
        storage.set_trial_user_attr(trial_id, name, _encoded(name, value))


def _encoded(name: str, value: Any) -> Any:
    if name not in _STORED:
        raise TypeError(f"TrialRecord has no stored field {name!r}")
    if name == "history":
        return [row.stored() for row in value]
    return asdict(value) if isinstance(value, Worker) else value


def trial_records(study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[TrialRecord]:
    """The study's trials as records, in number order, without the surplus ones that never ran."""
    found = (TrialRecord.of(t) for t in study.get_trials(deepcopy=False, states=states))
    return [record for record in found if not record.surplus]
