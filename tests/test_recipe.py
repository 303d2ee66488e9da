"""The training recipe and multi-fidelity search: flip-averaged scoring, a schedule that ends with the trial's own last
epoch, epoch levels, promotions (asynchronous successive halving), pruning among comparable trials only, and
a multi-fidelity study that resumes where it stopped."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from helpers import run, trials_of
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from automl_img.models.families import Families
from automl_img.searching.fidelity import (
    FIRST_LEVEL_IMAGES,
    Promotion,
    epoch_levels,
    final_phase,
    level_rows,
    next_promotion,
)
from automl_img.searching.samplers import MEDIAN_STARTUP_TRIALS, LevelMedianPruner, NearDefaults
from automl_img.study.records import EpochRow, TrialRecord


@pytest.mark.parametrize(
    "epochs, trials, levels",
    [
        (40, 50, [4, 13, 40]),
        (15, 3, [5, 15]),
        (6, 50, [2, 6]),
        (5, 50, [5]),
        (1, 50, [1]),
        (40, 2, [40]),
        (40, 1, [40]),
    ],
)
def test_epoch_levels_divide_by_three_down_to_two_epochs(epochs, trials, levels):
    """Fewer than 3 trials could never promote one: they train for all the epochs asked."""
    assert epoch_levels(epochs, trials) == levels


@pytest.mark.slow  # trains
@pytest.mark.parametrize("epochs", [1, 3])
def test_a_trial_schedule_ends_at_zero_with_its_own_last_epoch(epochs):
    """After warm-up to the peak, the rate decays to zero exactly when the last planned epoch ends."""
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import training
    from automl_img.space import DefaultHyperParameters

    hp = DefaultHyperParameters({"batch_size": 8, "image_size": 8})
    model, params = training.build_for_trial(Families.single(build_blog_cnn, [8]), hp, 1, 3)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (44, 8, 8, 1), dtype=np.uint8), np.arange(44) % 3
    steps = 5  # 40 training rows in batches of 8
    result = training.train(model, images, labels, np.arange(40), np.arange(40, 44), params, training.Limits(epochs))
    assert result.epochs_run == epochs and int(model.optimizer.iterations) == epochs * steps
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)  # where training ended
    rates = []
    for step in range(epochs * steps + 1):  # the whole schedule, read back through the optimizer
        model.optimizer.iterations.assign(step)
        rates.append(float(model.optimizer.learning_rate))
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)
    assert max(rates) == pytest.approx(params.learning_rate, rel=1e-6)
    assert rates.index(max(rates)) == min(steps, epochs * steps // training.WARMUP_SHARE)  # warm-up, then decay
    peak = rates.index(max(rates))
    assert all(later <= earlier for earlier, later in zip(rates[peak:], rates[peak + 1 :]))


@pytest.mark.slow  # trains
def test_the_best_epoch_and_patience_come_from_the_schedule_second_half():
    """A model that cannot improve (learning rate 0, no batch norm) scores the same every epoch. Its kept epoch is
    the second half's first, 7 of 12, not epoch 1, and patience 2 stops it at epoch 9, not 3: the first half's
    epochs, at high learning rates, are neither kept nor a plateau. A training stopped within the first half
    keeps its best epoch there."""
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import training
    from automl_img.space import DefaultHyperParameters

    hp = DefaultHyperParameters({"batch_size": 8, "image_size": 8, "learning_rate": 0.0, "batch_norm": False})
    model, params = training.build_for_trial(Families.single(build_blog_cnn, [8]), hp, 1, 3)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (44, 8, 8, 1), dtype=np.uint8), np.arange(44) % 3

    def train(limits):
        return training.train(model, images, labels, np.arange(40), np.arange(40, 44), params, limits)

    result = train(training.Limits(12, patience=2))
    assert result.best_epoch == 7 and result.epochs_run == 9, result.history
    assert result.stopped_by == "no improvement for 2 epochs of the schedule's second half"
    cut = train(training.Limits(12, patience=2, trial_seconds=0.0))
    assert (cut.best_epoch, cut.epochs_run, cut.stopped_by) == (1, 1, "trial time limit")


def test_a_model_trained_on_mirrored_images_is_scored_and_exported_flip_averaged(tmp_path):
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import training
    from automl_img.space import DefaultHyperParameters, sample_training_params
    from automl_img.tf_runtime import keras

    hp = DefaultHyperParameters({"image_size": 12, "horizontal_flip": True})
    model, params = training.build_for_trial(Families.single(build_blog_cnn, [12]), hp, 3, 4)
    images = np.random.default_rng(1).integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    expected = (model.predict(images, verbose=0) + model.predict(images[:, :, ::-1], verbose=0)) / 2
    averaged = training.as_trained(model, params)
    np.testing.assert_allclose(averaged.predict(images, verbose=0), expected, atol=1e-6)
    assert not np.allclose(expected, model.predict(images, verbose=0), atol=1e-4)  # the mirror changes something
    averaged.save(tmp_path / "model.keras")  # built-in layers only: loads in safe mode, as bundles do
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, atol=1e-6)
    unflipped = sample_training_params(DefaultHyperParameters(), 12)
    assert training.as_trained(model, unflipped) is model


def record(
    number: int,
    value: float | None,
    epochs: int,
    state=TrialState.COMPLETE,
    promoted_from=None,
    seconds=10.0,
    train_images=None,
) -> TrialRecord:
    return TrialRecord(
        number=number,
        state=state,
        value=value,
        params={"p": number},
        intermediate_values={},
        epochs=epochs,
        promoted_from=promoted_from,
        seconds=seconds,
        train_images=train_images,
        history=[EpochRow(e + 1, 1.0, {}) for e in range(epochs)],
    )


def test_the_best_third_of_a_level_is_promoted_once_each():
    levels = [2, 6, 18]
    low = [record(0, 0.5, 2), record(1, 0.9, 2), record(2, 0.7, 2)]
    assert next_promotion(low[:2], levels, larger_is_better=True) is None  # fewer than 3 finished: none is top third
    assert next_promotion(low, levels, larger_is_better=True) == Promotion(1, {"p": 1}, 6)
    promoted = low + [record(3, None, 6, state=TrialState.WAITING, promoted_from=1)]
    assert next_promotion(promoted, levels, larger_is_better=True) is None  # #1 is taken; #2 is not in the top third
    six = promoted + [record(4, 0.6, 2), record(5, 0.8, 2), record(6, 0.1, 2, state=TrialState.PRUNED)]
    assert next_promotion(six, levels, larger_is_better=True) == Promotion(5, {"p": 5}, 6)  # 7 finished: top 2
    assert next_promotion(six, levels, larger_is_better=False) == Promotion(0, {"p": 0}, 6)  # a loss: smallest first


def test_higher_levels_are_promoted_first_and_only_with_epochs_that_fit_the_time_left():
    levels = [2, 6, 18]
    trials = [
        record(0, 0.5, 2),
        record(1, 0.9, 2),
        record(2, 0.7, 2),
        record(3, 0.95, 6, promoted_from=1, seconds=60.0),
        record(4, 0.6, 6),
        record(5, 0.5, 6),
        record(6, 0.8, 2),
        record(7, 0.85, 2),
        record(8, 0.4, 2),
    ]
    assert next_promotion(trials, levels, True) == Promotion(3, {"p": 3}, 18)
    # #3 ran 6 epochs in 60 s: 10 s an epoch, planned as 11 (FIT_MARGIN); 100 s left, less the start-up, fit
    # 7 epochs, a schedule of its own
    assert next_promotion(trials, levels, True, seconds_left=100.0) == Promotion(3, {"p": 3}, 7)
    # too little time for more than #3 had: next due is #7 (level 2's top 2 of 6; #1 went up), 2 epochs in 10 s
    assert next_promotion(trials, levels, True, seconds_left=35.0) == Promotion(7, {"p": 7}, 3)
    assert next_promotion(trials, levels, True, seconds_left=20.0) is None


def test_the_last_share_of_a_time_limit_trains_the_best_configuration_for_as_long_as_fits():
    levels = [2, 6, 18]
    assert not final_phase(700.0, 1000.0) and final_phase(400.0, 1000.0) and not final_phase(None, None)
    one_each = [record(0, 0.5, 2), record(1, 0.9, 2), record(2, 0.95, 6, promoted_from=1, seconds=60.0)]
    assert next_promotion(one_each, levels, True, seconds_left=400.0) is None  # no level has 3 finished trials
    # in the final phase a level's best is due alone: #2 (10 s an epoch) gets its 18 epochs (38 would fit)
    assert next_promotion(one_each, levels, True, seconds_left=400.0, final=True) == Promotion(2, {"p": 2}, 18)
    taken = one_each + [record(3, None, 18, state=TrialState.RUNNING, promoted_from=2)]
    assert next_promotion(taken, levels, True, seconds_left=300.0, final=True) is None  # #1 went up already


def test_the_lowest_level_trains_on_one_fixed_subset_when_images_are_many():
    rows = np.arange(3, 3 + 3 * FIRST_LEVEL_IMAGES, 3)
    subset = level_rows(rows, 4, [4, 13, 40])
    assert len(subset) == FIRST_LEVEL_IMAGES and set(subset) <= set(rows) and (np.diff(subset) > 0).all()
    assert (level_rows(rows, 4, [4, 13, 40]) == subset).all()  # every trial of the level: the same images
    assert level_rows(rows, 13, [4, 13, 40]) is rows and level_rows(rows, 40, [40]) is rows
    few = rows[:FIRST_LEVEL_IMAGES]
    assert level_rows(few, 4, [4, 13, 40]) is few
    # a promotion trains on all images: its epochs cost what the subset's did, times the ratio
    low = [record(0, 0.9, 2, seconds=20.0, train_images=FIRST_LEVEL_IMAGES), record(1, 0.5, 2), record(2, 0.6, 2)]
    assert next_promotion(low, [2, 6], True, seconds_left=215.0) == Promotion(0, {"p": 0}, 6)  # 10 s an epoch
    assert next_promotion(low, [2, 6], True, seconds_left=215.0, train_images=4 * FIRST_LEVEL_IMAGES) == Promotion(
        0, {"p": 0}, 4
    )  # 40 s, planned 44


def test_pruning_compares_a_trial_with_trials_of_its_own_level_only():
    """At epoch 15, a 40-epoch trial reading 0.5 is pruned among 40-epoch peers reading 0.6, not among
    18-epoch peers that read 0.9 there (near the end of their schedule)."""
    study = optuna.create_study(direction="maximize", pruner=LevelMedianPruner())

    def peer(epochs: int, value: float) -> None:
        study.add_trial(
            create_trial(
                value=value,
                params={"x": 0.5},
                distributions={"x": FloatDistribution(0, 1)},
                intermediate_values={step: value for step in range(1, 19)},
                user_attrs={"epochs": epochs},
            )
        )

    def judged(epochs: int, value: float, step: int = 15) -> bool:
        trial = study.ask()
        trial.set_user_attr("epochs", epochs)
        for epoch in range(1, step + 1):
            trial.report(value, epoch)
        verdict = trial.should_prune()
        study.tell(trial, state=TrialState.FAIL)
        return verdict

    for _ in range(MEDIAN_STARTUP_TRIALS):
        peer(18, 0.9)
    assert not judged(40, 0.5)  # no 40-epoch peer yet
    for _ in range(MEDIAN_STARTUP_TRIALS):
        peer(40, 0.6)
    assert judged(40, 0.5) and not judged(40, 0.7)
    assert judged(18, 0.8)
    assert not judged(40, 0.5, step=14)  # the first third of 40 epochs is not judged
    assert not judged(18, 0.1, step=6) and judged(18, 0.1, step=7)  # ceil(18 / 3) = 6
    assert not judged(18, 0.1, step=18)  # the last epoch: the trial is complete anyway


@pytest.mark.slow
def test_a_multi_fidelity_study_resumes_and_promotes_its_best_short_trial(workdir, digits_dir):
    """--epochs 6: configurations train 2 epochs, the best third again for 6. A second run promotes the best
    of the first run's trials, and the promoted trial's schedule spans its own 6 epochs."""
    common = ["--epochs", 6, "--seed", 3, "-p", "image_size=8", "--pruner", "none"]
    run("search", digits_dir, "--trials", 3, *common)
    first = trials_of("digits")
    assert [t.user_attrs["epochs"] for t in first] == [2, 2, 2]
    assert [len(t.user_attrs["history"]) for t in first] == [2, 2, 2]
    best = max(first, key=lambda t: t.value)
    output = run("search", digits_dir, "--trials", 5, *common).output
    trials = trials_of("digits")
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    promoted = trials[3]
    assert promoted.user_attrs["promoted_from"] == best.number and promoted.params == best.params
    assert promoted.user_attrs["epochs"] == 6 and len(promoted.user_attrs["history"]) == 6
    assert trials[4].user_attrs["epochs"] == 2 and "promoted_from" not in trials[4].user_attrs
    assert "trials: 5 completed" in output
    shown = run("show").output
    assert "6/6" in shown and f"#{best.number} for longer" in shown


def test_startup_trials_vary_a_share_of_the_defaults_and_sample_the_rest():
    """In a real study whose first trial holds the defaults: each parameter keeps its default with probability
    1 - share; a parameter the defaults lack, or a default outside a narrowed range, is always sampled."""
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"rate": 1.0, "kind": "a", "family": "x"})
    study.enqueue_trial({"rate": 1.0, "kind": "a", "family": "y"})  # a second architecture's defaults
    study.optimize(
        lambda t: (
            t.suggest_float("rate", 0.0, 10.0)
            + len(t.suggest_categorical("kind", ["a", "b", "c"]))
            + len(t.suggest_categorical("family", ["x", "y"]))
        ),
        n_trials=2,
    )
    study.sampler = NearDefaults(optuna.samplers.RandomSampler(seed=1), 0.25, seed=0)
    rates, kinds, families, new = [], [], [], []
    for _ in range(200):
        trial = study.ask()
        rates.append(trial.suggest_float("rate", 0.0, 10.0))
        kinds.append(trial.suggest_categorical("kind", ["a", "b", "c"]))
        families.append(trial.suggest_categorical("family", ["x", "y"]))
        new.append(trial.suggest_float("new", 0.0, 1.0))
        study.tell(trial, 0.0)
    assert 130 <= rates.count(1.0) <= 170 and len(set(rates)) > 40  # 150 expected; the rest across the range
    assert 140 <= kinds.count("a") <= 185 and {"b", "c"} <= set(kinds)  # 150, plus a third of the 50 drawn
    assert 80 <= families.count("x") <= 120  # the defaults differ: no default, always drawn
    assert len(set(new)) == 200  # no default: always drawn
    narrowed = []
    for _ in range(20):
        trial = study.ask()
        narrowed.append(trial.suggest_float("rate", 2.0, 3.0))  # the default 1.0 lies outside: drawn
        study.tell(trial, 0.0)
    assert len(set(narrowed)) == 20 and all(2.0 <= rate <= 3.0 for rate in narrowed)

    failed = optuna.create_study()  # defaults that failed (a plugin's bug at its defaults) are no center
    failed.enqueue_trial({"rate": 1.0})
    failed.optimize(lambda t: t.suggest_float("rate", 0.0, 10.0) / 0, n_trials=1, catch=(ZeroDivisionError,))
    failed.sampler = NearDefaults(optuna.samplers.RandomSampler(seed=1), 0.25, seed=0)
    drawn = [failed.ask().suggest_float("rate", 0.0, 10.0) for _ in range(20)]
    assert failed.trials[0].state == TrialState.FAIL and len(set(drawn)) == 20
