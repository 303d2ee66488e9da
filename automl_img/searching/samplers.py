"""Optuna's sampler and the pruner, as the search's options name them."""

from __future__ import annotations

import math
import statistics
import warnings

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from automl_img.study import records
from automl_img.study.records import FINISHED, TrialRecord

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
# TPE models the results after this many completed trials; before them, a scrambled Sobol sequence spreads
# the numeric parameters evenly over their ranges (random points leave holes and clumps).
STARTUP_TRIALS = 8
# In the startup trials each parameter leaves its default with this probability (about 5 of blog-cnn's 21 per
# trial). On the development subset, 4-epoch trials averaged 0.816 when every parameter moved and 0.857 near
# the defaults (0.883): changing a few at a time finds what helps, and the average gets members close to the best.
NEAR_DEFAULTS_SHARE = 0.25
MEDIAN_STARTUP_TRIALS = 4  # trials of the same level that must have reached an epoch before any is pruned at it


def make_sampler(name: str, seed: int | None, completed: int = 0) -> optuna.samplers.BaseSampler:
    """``seed`` reseeds the random parts per trial; the Sobol scramble is the same in every trial process, so
    the startup trials are consecutive points of one sequence (QMCSampler counts them in the storage)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if completed < STARTUP_TRIALS:
            return NearDefaults(
                optuna.samplers.QMCSampler(
                    qmc_type="sobol",
                    scramble=True,
                    seed=0,
                    independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                    warn_independent_sampling=False,
                    warn_asynchronous_seeding=False,
                ),
                NEAR_DEFAULTS_SHARE,
                seed,
            )
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=STARTUP_TRIALS)


class NearDefaults(optuna.samplers.BaseSampler):
    """Each parameter takes the inner sampler's value with probability ``share``, else its default (``defaults``).
    A parameter with no default, or whose default the distribution no longer holds, takes the inner value."""

    def __init__(self, inner: optuna.samplers.BaseSampler, share: float, seed: int | None):
        self.inner, self.share, self._rng = inner, share, np.random.default_rng(seed)
        self._defaults: dict[str, object] | None = None

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, object]:
        sampled = self.inner.sample_relative(study, trial, search_space)
        return {name: self._choose(study, name, search_space[name], value) for name, value in sampled.items()}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> object:
        value = self.inner.sample_independent(study, trial, param_name, param_distribution)
        return self._choose(study, param_name, param_distribution, value)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state, values) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self._rng = np.random.default_rng()

    def _choose(self, study: optuna.Study, name: str, distribution: BaseDistribution, sampled: object) -> object:
        if self._rng.random() < self.share:
            return sampled
        if self._defaults is None:
            self._defaults = defaults(study)
        if name not in self._defaults:
            return sampled
        default = self._defaults[name]
        try:
            held = distribution._contains(distribution.to_internal_repr(default))
        except (ValueError, TypeError):
            held = False
        return default if held else sampled


def defaults(study: optuna.Study) -> dict[str, object]:
    """Each parameter's value in the queued trials that are not promotions (``enqueue_defaults``: one trial per
    architecture and starting size) nor the unwarped start, and did not fail (a plugin's bug at its defaults), where
    they all agree (not ``architecture``, not the image size)."""
    found: dict[str, list] = {}
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.of(trial)
        if record.promoted_from is None and not record.unwarped_start and trial.state != optuna.trial.TrialState.FAIL:
            for name, value in trial.system_attrs.get("fixed_params", {}).items():
                found.setdefault(name, []).append(value)
    return {name: values[0] for name, values in found.items() if len(set(map(repr, values))) == 1}


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
        peers = [
            peer.intermediate_values[step]
            for peer in records.trial_records(study, FINISHED)
            if peer.epochs == level and step in peer.intermediate_values
        ]
        if len(peers) < MEDIAN_STARTUP_TRIALS:
            return False
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        values = [v for s, v in trial.intermediate_values.items() if s <= step and math.isfinite(v)]
        if not values:
            return True
        best = max(values) if maximize else min(values)
        median = statistics.median(peers)
        return best < median if maximize else best > median
