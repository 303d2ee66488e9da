"""Multi-fidelity: many short trainings first, the best configurations trained again for longer.

A trial trains for its level's epochs under a learning-rate schedule that ends with the last of them
(``training.compile_for``), so a short trial is a complete short training, not the first epochs of a
long one. New configurations start at the lowest level. Asynchronous successive halving (ASHA, Li et
al., MLSys 2020) promotes a trial once it ranks among the best 1/REDUCTION of its level's finished
trials: its configuration is queued again, trained from scratch at the next level. Promotions never
wait for a level to fill, so a worker always has a trial to run.

Two departures for budgets. With a time limit, the search's last FINAL_SHARE of it trains the best
configuration found for as long as the time left allows (a level's best is due even before its level
has REDUCTION finished trials), instead of starting short trials whose models the export will not use.
And on many images the lowest level trains on a fixed random subset of at most FIRST_LEVEL_IMAGES, so
new configurations stay cheap: 4 epochs of 51,000 images would cost as much as 20 of 10,000.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import TrialState

from automl_img.study.records import TrialRecord, ranked

REDUCTION = 3
MIN_EPOCHS = 2  # one epoch is all warm-up and decay: a ranking of such trials says little
FINAL_SHARE = 0.4
FIRST_LEVEL_IMAGES = 10_000
START_SECONDS = 15  # a trial process's start: TensorFlow's import, the cached images, the first compile
FIT_MARGIN = 1.1  # epochs vary: a training sized to the time left plans for 10 % slower ones


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


def level_rows(train_rows: np.ndarray, epochs: int, levels: list[int]) -> np.ndarray:
    """The rows a trial of ``epochs`` trains on: all, except at the lowest of several levels, where at most
    FIRST_LEVEL_IMAGES, the same random subset for every trial (their scores are compared with each other)."""
    if len(levels) < 2 or epochs > levels[0] or len(train_rows) <= FIRST_LEVEL_IMAGES:
        return train_rows
    return np.sort(np.random.default_rng(0).choice(train_rows, FIRST_LEVEL_IMAGES, replace=False))


def final_phase(seconds_left: float | None, timeout: float | None) -> bool:
    """Whether a search with a time limit is in its last FINAL_SHARE of it."""
    if seconds_left is None or not timeout:
        return False
    return seconds_left <= FINAL_SHARE * timeout


def next_promotion(
    trials: list[TrialRecord],
    levels: list[int],
    larger_is_better: bool,
    seconds_left: float | None = None,
    final: bool = False,
    train_images: int | None = None,
) -> Promotion | None:
    """The next configuration due for a longer training, highest level first; None when none is due.

    With a time limit, the promotion gets the epochs that still fit (its schedule is fitted to them),
    and none when that is no more than it already had. In the ``final`` phase each level's best is due
    even while its level has fewer than REDUCTION finished trials. ``train_images``: how many a promotion
    trains on (a trial of the lowest level may have trained on fewer: its pace is scaled).
    """
    promoted = {trial.promoted_from for trial in trials if trial.promoted_from is not None}
    for level, higher in reversed(list(itertools.pairwise(levels))):
        rung = [trial for trial in trials if trial.epochs == level and trial.finished]
        due = len(rung) // REDUCTION
        for trial in ranked(rung, larger_is_better)[: max(due, 1) if final else due]:
            if trial.number in promoted:
                continue
            epochs = _fitting(higher, trial, seconds_left, train_images)
            if epochs > level:
                return Promotion(trial.number, trial.params, epochs)
    return None


def _fitting(epochs: int, trial: TrialRecord, seconds_left: float | None, train_images: int | None) -> int:
    """The epochs of ``trial``'s configuration that fit in the time left (its own epochs' pace, scaled to
    ``train_images`` an epoch where it trained on a subset)."""
    if seconds_left is None or not trial.seconds or not trial.epochs_run:
        return epochs
    per_epoch = trial.seconds / trial.epochs_run
    if train_images and trial.train_images:
        per_epoch *= train_images / trial.train_images
    return min(epochs, int((seconds_left - START_SECONDS) / (per_epoch * FIT_MARGIN)))


def estimated_seconds(
    trials: list[TrialRecord],
    forward_gflop: float,
    epochs: int,
    train_images: int,
    parent: int | None = None,
    image_size: int | None = None,
) -> float | None:
    """How long a training of ``epochs`` over ``train_images`` of a model of ``forward_gflop`` will take, at the
    pace (seconds per image-epoch-GFLOP) of the study's finished trainings; None before there is one.

    Image size and width are both in the GFLOP, so a 224 px trial can be priced from 64 px ones, but the pace per
    GFLOP differs between sizes: decoding and the augmentation's warp scale with pixels, not GFLOP (patchified
    224 px trials paid about 1.3x what 64 and 128 px ones did). So a trial is priced at the median pace of finished
    trials of its ``image_size`` where there are some, else of all; and a promotion (``parent``: the trial it trains
    for longer) at its parent's own pace, as ``next_promotion`` sized it (at the median pace, a promotion fitted to
    the time left was refused as too long)."""
    paces = {
        trial.number: (trial.image_size, trial.seconds / (trial.epochs_run * trial.train_images * trial.forward_gflop))
        for trial in trials
        if trial.finished and trial.seconds and trial.epochs_run and trial.train_images and trial.forward_gflop
    }
    if not paces:
        return None
    same_size = [pace for size, pace in paces.values() if size == image_size]
    pace = paces[parent][1] if parent in paces else float(np.median(same_size or [p for _, p in paces.values()]))
    return pace * epochs * train_images * forward_gflop * FIT_MARGIN


def shortest_training(trials: list[TrialRecord]) -> float | None:
    """The seconds of the study's quickest finished training (None before there is one)."""
    seconds = [trial.seconds for trial in trials if trial.state == TrialState.COMPLETE and trial.seconds]
    return min(seconds) if seconds else None
