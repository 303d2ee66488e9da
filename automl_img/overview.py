"""What is in the storage: the studies, one study's trials, parameter importances."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl_img.study.config import StudyConfig
from automl_img.study.storage import open_storage


@dataclass(frozen=True)
class StudyRow:
    name: str
    objective: str
    completed: int
    pruned: int
    failed: int
    running: int
    best_value: float | None
    best_trial: int | None
    last_update: datetime | None
    data: str


def study_rows(storage_url: str | None = None) -> list[StudyRow]:
    """One row per study in the storage, by name."""
    storage = open_storage(storage_url)
    rows = []
    for summary in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        rows.append(summarise(study))
    return rows


def summarise(study: optuna.Study) -> StudyRow:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    states = [t.state for t in trials]
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if completed else None
    moments = [t.datetime_complete or t.datetime_start for t in trials if t.datetime_complete or t.datetime_start]
    config = StudyConfig.of(study)
    return StudyRow(
        name=study.study_name, objective=config.objective if config else "value",
        completed=len(completed), pruned=states.count(TrialState.PRUNED), failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING), best_value=best.value if best else None,
        best_trial=best.number if best else None, last_update=max(moments) if moments else None,
        data=(config.source or config.dataset) if config else "",
    )


def trial_rows(study: optuna.Study) -> list[list]:
    """#, state, value, best epoch, epochs run, seconds, and why it stopped or failed."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("surplus"):
            continue
        attrs = trial.user_attrs
        why = attrs.get("fail_reason") or attrs.get("stopped_by") or ""
        rows.append([trial.number, trial.state.name.lower(), _value(trial), attrs.get("best_epoch"),
                     len(attrs.get("history", [])) or None, attrs.get("seconds"), why])
    return rows


def importances(study: optuna.Study) -> dict[str, float] | str:
    """fANOVA parameter importances of the completed trials, or why there are none yet."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < 3:
        return f"needs at least 3 completed trials ({len(completed)} so far)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as exc:
        return f"not available: {exc}"


def _value(trial: FrozenTrial) -> str:
    return f"{trial.value:.4f}" if trial.value is not None else ""
