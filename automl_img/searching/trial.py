"""One trial, as the trial process runs it: sample, decode (cached), build, train, record."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from automl_img.data.audit_cache import CACHE_FILE as AUDIT_CACHE
from automl_img.data.audit_cache import features_by_row
from automl_img.data.features import load_features
from automl_img.errors import DataError, PluginError, StudyError, TrialFailed
from automl_img.models.families import Families
from automl_img.searching.fidelity import epoch_levels, estimated_seconds, level_rows
from automl_img.searching.progress import DecodeProgress, EpochDone, ProgressEvent, TrialStarted
from automl_img.space import (
    WARP_PARAMETERS,
    DefaultHyperParameters,
    Stage,
    TrialHyperParameters,
    starting_image_sizes,
    unwarped_start_size,
)
from automl_img.study import records
from automl_img.study.artifacts import upload_weights
from automl_img.study.config import StudyConfig, audit_dir, study_dir
from automl_img.study.handle import trial_weights
from automl_img.study.records import FINISHED, Worker

if TYPE_CHECKING:
    from automl_img.searching.options import SearchOptions
    from automl_img.searching.plan import TrialSpec

Emit = Callable[[ProgressEvent], None]  # progress for the search's listener


class Objective:
    """The function Optuna calls; a trial's own faults become TrialFailed, the study goes on."""

    def __init__(self, spec: TrialSpec, architectures: Families, emit: Emit):
        self.spec, self.architectures, self.emit = spec, architectures, emit
        self.last_number: int | None = None
        self.unreadable: list[tuple[str, str]] = []

    def __call__(self, trial: optuna.Trial) -> float:
        self.last_number = trial.number
        records.write(trial, worker=Worker.this_process(self.spec.search_pid))
        if self._surplus(trial):
            records.write(trial, surplus=True)
            raise TrialFailed(
                f"not run: the study's {self.spec.options.trials} trials were already taken by other workers"
            )
        try:
            return self._run(trial)
        except TrialFailed as exc:
            records.write(trial, fail_reason=str(exc))
            raise
        except KeyboardInterrupt:
            records.write(trial, fail_reason="interrupted (Ctrl-C)")
            raise

    def _check_time_left(
        self, trial: optuna.Trial, gflop: float, epochs: int, train_images: int, image_size: int
    ) -> None:
        """A training that would outlast the study's time limit is not started (its cost is priced from the
        study's finished trainings): cut short, it would cost the time and give no score."""
        if self.spec.deadline is None:
            return
        finished = records.trial_records(trial.study, FINISHED)
        parent = records.read(trial, "promoted_from")
        needed = estimated_seconds(finished, gflop, epochs, train_images, parent, image_size)
        left = self.spec.deadline - time.time()
        if needed is not None and needed > left:
            records.write(trial, time_limited=True)
            raise TrialFailed(
                f"not started: its {epochs} epochs would take about {needed:.0f} s and the study's "
                f"time limit leaves {max(left, 0):.0f} s"
            )

    @staticmethod
    def _trained_longer_than_its_parent(trial: optuna.Trial, epochs_run: int) -> bool:
        """A promotion cut by the time limit after more epochs than the trial it trains for longer: a better
        trained model of an already scored configuration (the final phase's, sized to the time left, when the
        machine slows down), kept rather than lost."""
        parent = records.read(trial, "promoted_from")
        if parent is None:
            return False
        trained = next(
            (record.epochs_run for record in records.trial_records(trial.study) if record.number == parent), 0
        )
        return epochs_run > trained

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Workers that asked for a trial at the same moment: the later numbers give way."""
        taken = trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        return sum(t.number < trial.number for t in taken) >= self.spec.options.trials

    def _run(self, trial: optuna.Trial) -> float:
        from automl_img.models import precision, training  # TensorFlow loads here, in the trial process only

        options, config, data = self.spec.options, self.spec.config, self.spec.data
        hp = TrialHyperParameters(trial, options.overrides)
        seed = (options.seed or 0) + trial.number
        training.keras.utils.set_random_seed(seed)
        records.write(trial, precision=precision.apply(options.precision))
        try:
            model, params = training.build_for_trial(
                self.architectures, hp, config.channels, len(config.class_names), ordinal=config.ordinal
            )
            unused = hp.unused_overrides() if len(self.architectures.members) == 1 else []  # else: enqueue_defaults
            compile_only = [name for name in unused if name in hp.not_searched]
            if compile_only:
                raise StudyError(
                    f"parameter(s) {', '.join(compile_only)} only configure the architecture's own compile, which "
                    "automl-img replaces with its recipe: they are not searched (docs/PLUGINS.md); narrow the "
                    "recipe's parameters instead, such as -p learning_rate=..."
                )
            if unused:
                raise StudyError(
                    f"parameter(s) {', '.join(unused)} are not in the search space; "
                    f"known: {', '.join(sorted(hp.values))}"
                )
            if hp.not_searched:
                records.write(trial, not_searched=sorted(hp.not_searched))
            decoded = data.cache.load(
                params.image_size,
                config.channels,
                lambda done, total: self.emit(DecodeProgress(params.image_size, done, total)),
            )
            self.unreadable = data.unreadable_files(decoded)
            train_rows, val_rows = data.rows("train", decoded), data.rows("val", decoded)
            if len(train_rows) == 0 or len(val_rows) == 0:
                raise DataError(
                    "no readable images left in the train or val split; check the skipped files listed above"
                )
            levels = epoch_levels(options.epochs, options.trials)
            epochs = records.read(trial, "epochs") or levels[0]  # set when queued
            train_rows = level_rows(train_rows, epochs, levels)
            stage = training.stage_of(model)
            gflop = training.forward_gflop(model)
            records.write(
                trial,
                seed=seed,
                command=options.as_command(),
                epochs=epochs,
                train_images=len(train_rows),
                forward_gflop=round(gflop, 4) if stage == Stage.FULL else None,
            )
            if stage == Stage.FULL:
                self._check_time_left(trial, gflop, epochs, len(train_rows), params.image_size)
            self.emit(TrialStarted(trial.number, dict(trial.params), epochs, records.read(trial, "promoted_from")))
            limits = training.Limits(epochs, options.patience, self.spec.deadline, options.trial_timeout)
            fit = functools.partial(
                training.train,
                labels=data.labels,
                train_rows=train_rows,
                val_rows=val_rows,
                limits=limits,
                objective=config.objective,
                seed=seed,
                class_weight=config.class_weights(data.labels, train_rows),
            )
            reporter = _Reporter(trial, self.emit)
            if stage != Stage.FULL:  # the head first, on the backbone's features, computed once for every trial
                parts = training.backbone_parts(model)
                assert parts is not None  # stage_of found them
                features = load_features(
                    parts.extractor,
                    decoded.images,
                    data.cache.path_for(params.image_size, config.channels),
                    lambda done, total: self.emit(DecodeProgress(params.image_size, done, total, "computing features")),
                    known=lambda: features_by_row(
                        audit_dir(config.dataset, config.source) / AUDIT_CACHE, data.split.image_set
                    ),
                )
                result = fit(
                    parts.head,
                    features,
                    params=params.without_augmentation(),
                    reporter=reporter if stage == Stage.HEAD else None,
                )
            if stage != Stage.HEAD:
                result = fit(
                    model,
                    decoded.images,
                    params=params,
                    reporter=reporter,
                    learning_rate=params.fine_tune_learning_rate,
                )
            records.write(
                trial,
                history=result.history,
                stopped_by=result.stopped_by,
                seconds=round(result.seconds, 2),
                resident_mb=resident_mb(),
            )
            if result.pruned:
                raise optuna.TrialPruned(f"pruned after epoch {result.epochs_run}")
            if result.cut and not self._trained_longer_than_its_parent(trial, result.epochs_run):
                # Its schedule had not ended: scored, it would teach the sampler a false lesson (a large image
                # size, cut after an epoch, looks bad). A promotion past its parent's epochs keeps its best epoch.
                records.write(trial, time_limited=True)
                raise TrialFailed(
                    f"cut by the study's time limit after {result.epochs_run} of {epochs} epochs; not scored"
                )
            if result.best_value is None:
                raise TrialFailed("no epoch of the training gave a finite val score")
            weights = trial_weights(trial.number)
            training.save_weights(model, study_dir(trial.study.study_name) / weights)
            if config.artifacts:
                records.write(
                    trial,
                    weights_artifact=upload_weights(
                        config.artifacts, study_dir(trial.study.study_name) / weights, trial
                    ),
                )
        except (DataError, StudyError, optuna.TrialPruned, TrialFailed):
            raise
        except PluginError as exc:
            raise TrialFailed(str(exc)) from exc
        except Exception as exc:  # a plugin's bug, an out-of-memory batch size...: this trial only
            raise TrialFailed(f"{type(exc).__name__}: {exc}") from exc
        records.write(trial, best_epoch=result.best_epoch, val_scores=result.best_scores, weights=weights)
        return float(result.best_value)


class _Reporter:
    """Reports each epoch to the pruner and the listener."""

    def __init__(self, trial: optuna.Trial, emit: Emit):
        self.trial, self.emit = trial, emit

    def report(self, value: float, step: int) -> None:
        self.trial.report(value, step)
        self.emit(EpochDone(self.trial.number, step, value))

    def should_prune(self) -> bool:
        return self.trial.should_prune()


def enqueue_defaults(study: optuna.Study, options: SearchOptions, config: StudyConfig, architectures: Families) -> None:
    """A new study's first trial is every parameter's default: for the built-ins, a configuration that did
    well on our development data (docs/search.md, "The search space"), at the lowest epoch level. The same defaults at
    larger image sizes come next (``space.starting_image_sizes``), so the first rung says whether resolution
    pays, then the first architecture's defaults without the affine warp (``space.WARP_PARAMETERS``), which
    blurs details a pixel wide. With several architectures, each one's defaults come next, so the family is
    judged early and cheaply.

    The search then starts from a known, strong model (exportable early) and improves on it.
    """
    from automl_img.models import training

    declared: set[str] = set()
    level = epoch_levels(options.epochs, options.trials)[0]
    for index, (fixed, family) in enumerate(zip(architectures.default_overrides(), architectures.members)):
        name = family.size_parameter
        sizes = starting_image_sizes(family.image_sizes, options.overrides.get(name), name)
        values: dict[int, dict] = {}
        for size in sizes:
            hp = DefaultHyperParameters({**options.overrides, **fixed, name: size})
            try:  # building declares the architecture's parameters, so their defaults are fixed too
                training.build_for_trial(
                    architectures, hp, config.channels, len(config.class_names), ordinal=config.ordinal
                )
            except (DataError, StudyError):  # missing pretrained weights, say: stop before any trial, with the reason
                raise
            except Exception:  # noqa: BLE001 - a plugin's bug: the trial meets it again and records the reason
                pass
            finally:
                training.keras.backend.clear_session()
            declared |= set(hp.values)
            values[size] = hp.values
            records.enqueue(study, hp.values, skip_if_exists=True, epochs=level)
        unwarp = {parameter: 0.0 for parameter in WARP_PARAMETERS}
        base = values[unwarped_start_size(sizes)]
        room = options.trials >= len(sizes) + 2  # a short search keeps its trials for the sizes and one sampled
        if index == 0 and room and not set(unwarp) & set(options.overrides) and set(unwarp) <= set(base):
            records.enqueue(study, {**base, **unwarp}, skip_if_exists=True, epochs=level, unwarped_start=True)
    unused = set(options.overrides) - declared
    if len(architectures.members) > 1 and unused:  # one family's trial cannot tell another family's parameters
        raise StudyError(
            f"parameter(s) {', '.join(sorted(unused))} are in none of the architectures' search spaces; "
            f"known: {', '.join(sorted(declared))}"
        )


def resident_mb() -> float | None:
    """This process's resident memory now (VmRSS), in MB; None where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None
