"""Optuna's sampler and the pruner, as the search's options name them."""

from __future__ import annotations

import math
import statistics
import warnings

import optuna
from optuna.trial import FrozenTrial

from automl_img.study import records
from automl_img.study.records import FINISHED, TrialRecord

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
# TPE models the results after this many completed trials; before them, a scrambled Sobol sequence spreads
# the numeric parameters evenly over their ranges (random points leave holes and clumps).
STARTUP_TRIALS = 8
MEDIAN_STARTUP_TRIALS = 4  # trials of the same level that must have reached an epoch before any is pruned at it


def make_sampler(name: str, seed: int | None, completed: int = 0) -> optuna.samplers.BaseSampler:
    """``seed`` reseeds the random parts per trial; the Sobol scramble is the same in every trial process, so
    the startup trials are consecutive points of one sequence (QMCSampler counts them in the storage)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if completed < STARTUP_TRIALS:
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=0,
                                              independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                                              warn_independent_sampling=False, warn_asynchronous_seeding=False)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=STARTUP_TRIALS)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner() if name == "none" else LevelMedianPruner()


class LevelMedianPruner(optuna.pruners.BasePruner):
    """Optuna's median rule among trials of the same epoch level only: their schedules are alike, so their
    scores at one epoch are comparable (a 4-epoch trial's epoch 3 is near its end, a 40-epoch trial's is
    still warm). Never in a level's first third, nor at its last epoch, where the trial is complete anyway."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        level = TrialRecord.of(trial).epochs
        if step is None or level is None or step <= math.ceil(level / 3) or step >= level:
            return False
        peers = [peer.intermediate_values[step] for peer in records.trial_records(study, FINISHED)
                 if peer.epochs == level and step in peer.intermediate_values]
        if len(peers) < MEDIAN_STARTUP_TRIALS:
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        values = [v for s, v in trial.intermediate_values.items() if s <= step and math.isfinite(v)]
        if not values:
            return True
        best = max(values) if maximize else min(values)
        median = statistics.median(peers)
        return best < median if maximize else best > median
