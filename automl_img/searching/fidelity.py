"""Multi-fidelity: many short trainings first, the best configurations trained again for longer.

A trial trains for its level's epochs under a learning-rate schedule that ends with the last of them
(``training.compile_for``), so a short trial is a complete short training, not the first epochs of a
long one. New configurations start at the lowest level. Asynchronous successive halving (ASHA, Li et
al., MLSys 2020) promotes a trial once it ranks among the best 1/REDUCTION of its level's finished
trials: its configuration is queued again, trained from scratch at the next level. Promotions never
wait for a level to fill, so a worker always has a trial to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

from automl_img.study.records import TrialRecord

REDUCTION = 3
MIN_EPOCHS = 2  # one epoch is all warm-up and decay: a ranking of such trials says little
START_SECONDS = 15  # a trial process's start: TensorFlow's import, the cached images, the first compile


def epoch_levels(max_epochs: int, trials: int) -> list[int]:
    """``--epochs 40`` gives [4, 13, 40]: each level REDUCTION times the one below, none under MIN_EPOCHS.

    A search of fewer than REDUCTION trials could never promote one: its trials train for ``max_epochs``.
    """
    levels = [max_epochs]
    while trials >= REDUCTION and levels[0] // REDUCTION >= MIN_EPOCHS:
        levels.insert(0, levels[0] // REDUCTION)
    return levels


@dataclass(frozen=True)
class Promotion:
    """A configuration to train again for longer."""

    parent: int  # the trial number it comes from
    params: dict[str, Any]
    epochs: int


def next_promotion(trials: list[TrialRecord], levels: list[int], larger_is_better: bool,
                   seconds_left: float | None = None) -> Promotion | None:
    """The next configuration due for a longer training, highest level first; None when none is due.

    With a time limit, the promotion gets the epochs that still fit (its schedule is fitted to them),
    and none when that is no more than it already had.
    """
    promoted = {trial.promoted_from for trial in trials if trial.promoted_from is not None}
    for level, higher in reversed(list(zip(levels, levels[1:]))):
        rung = [trial for trial in trials if trial.epochs == level and trial.finished]
        completed = [trial for trial in rung if trial.state == TrialState.COMPLETE and trial.value is not None]
        ranked = sorted(completed, key=lambda trial: trial.value, reverse=larger_is_better)
        for trial in ranked[:len(rung) // REDUCTION]:
            if trial.number in promoted:
                continue
            epochs = _fitting(higher, trial, seconds_left)
            if epochs > level:
                return Promotion(trial.number, trial.params, epochs)
    return None


def _fitting(epochs: int, trial: TrialRecord, seconds_left: float | None) -> int:
    """The epochs of ``trial``'s configuration that fit in the time left (its own epochs' pace)."""
    if seconds_left is None or not trial.seconds or not trial.epochs_run:
        return epochs
    return min(epochs, int((seconds_left - START_SECONDS) * trial.epochs_run / trial.seconds))
