"""What is in the storage: the studies, one study's trials, parameter importances."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from automl_img.study.config import StudyConfig
from automl_img.study.handle import StoredStudy, TrialCounts, count_trials
from automl_img.study.records import TrialRecord, ranked, trial_records
from automl_img.study.storage import open_storage, study_names


@dataclass(frozen=True)
class StudyRow:
    name: str
    objective: str
    counts: TrialCounts
    best_value: float | None
    best_trial: int | None
    last_update: datetime | None
    data: str


def study_rows(storage_url: str | None = None) -> list[StudyRow]:
    """One row per study in the storage, by name (studies other programs made included)."""
    storage = open_storage(storage_url)
    return [summarise(optuna.load_study(study_name=name, storage=storage)) for name in study_names(storage)]


def summarise(study: optuna.Study) -> StudyRow:
    trials = trial_records(study)
    counts = count_trials(trials)
    best = next(iter(ranked(trials, study.direction == StudyDirection.MAXIMIZE)), None)
    moments = [moment for t in study.get_trials(deepcopy=False) if (moment := t.datetime_complete or t.datetime_start)]
    config = StudyConfig.of(study)
    return StudyRow(
        name=study.study_name,
        objective=config.objective if config else "value",
        counts=counts,
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        last_update=max(moments) if moments else None,
        data=(config.source or config.dataset) if config else "",
    )


TRIAL_COLUMNS = ["#", "state", "value", "image size", "best epoch", "epochs", "seconds", "why it ended"]
SIZE_COLUMNS = ["image size", "completed", "best trial", "best val", "median seconds per epoch"]


def trial_rows(stored: StoredStudy) -> list[list]:
    """TRIAL_COLUMNS: #, state, value, image size, best epoch, epochs run of planned, seconds, and why it stopped or
    failed (or whose configuration it trains for longer)."""
    return [
        [
            trial.number,
            trial.state.name.lower(),
            f"{trial.value:.4f}" if trial.value is not None else "",
            trial.image_size,
            trial.best_epoch,
            _epochs(trial),
            trial.seconds,
            trial.fail_reason or _ended(trial),
        ]
        for trial in stored.trials()
    ]


def size_rows(stored: StoredStudy) -> list[list]:
    """SIZE_COLUMNS, one row per image size the study's completed trials trained at: what each size achieved,
    and at what cost, so a user sees why the exported model runs at the size it does."""
    completed = stored.trials((TrialState.COMPLETE,))
    rows = []
    sizes = {trial.image_size for trial in completed}
    for size in sorted(size for size in sizes if size is not None):
        at_size = [trial for trial in completed if trial.image_size == size]
        best = ranked(at_size, stored.larger_is_better)[0]
        paces = sorted(trial.seconds / trial.epochs_run for trial in at_size if trial.seconds and trial.epochs_run)
        rows.append(
            [
                size,
                len(at_size),
                f"#{best.number}",
                f"{best.value:.4f}",
                round(paces[len(paces) // 2], 1) if paces else None,
            ]
        )
    return rows


def _epochs(trial: TrialRecord) -> str | None:
    if not trial.epochs_run:
        return None
    return f"{trial.epochs_run}/{trial.epochs}" if trial.epochs else str(trial.epochs_run)


def _ended(trial: TrialRecord) -> str:
    promoted = f"#{trial.promoted_from} for longer" if trial.promoted_from is not None else ""
    return "; ".join(part for part in (trial.stopped_by, promoted) if part)


def importances(study: optuna.Study) -> dict[str, float] | str:
    """fANOVA parameter importances of the completed trials, or why there are none yet."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < 3:
        return f"needs at least 3 completed trials ({len(completed)} so far)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
    except (RuntimeError, ValueError) as exc:
        return f"not available: {exc}"
