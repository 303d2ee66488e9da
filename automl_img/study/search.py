"""The search: create or resume a study, run trials until the budget is spent, summarise."""

from __future__ import annotations

import gc
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl_img.data.decode import probe_native_shape
from automl_img.errors import DataError, PluginError, StudyError, TrialFailed
from automl_img.metrics import OBJECTIVES
from automl_img.plugins import Entry, Registry
from automl_img.space import (
    Override, TrialHyperParameters, default_image_sizes, sample_training_params,
)
from automl_img.study.config import StudyConfig, StudyData, default_study_name, open_data, study_dir
from automl_img.study.storage import open_storage, redact, study_names

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass
class SearchOptions:
    """Everything ``automl-img search`` can be told."""

    source: str | None = None
    dataset: str = "folder"
    architecture: str = "blog-cnn"
    study: str | None = None
    storage: str | None = None
    trials: int = 50
    timeout: float | None = None
    epochs: int = 40
    patience: int = 10
    trial_timeout: float | None = None
    seed: int | None = None
    objective: str = "accuracy"
    overrides: dict[str, Override] = field(default_factory=dict)
    max_consecutive_failures: int = 5


class SearchListener:
    """What the search tells its caller as it goes; every method is optional."""

    def study_ready(self, study_name: str, storage: str, data: StudyData, config: StudyConfig, done: int) -> None: ...

    def decode_progress(self, image_size: int, done: int, total: int) -> None: ...

    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...

    def epoch_done(self, number: int, epoch: int, value: float) -> None: ...

    def trial_finished(self, trial: FrozenTrial) -> None: ...


@dataclass
class SearchSummary:
    study_name: str
    storage: str
    objective: str
    completed: int
    pruned: int
    failed: int
    running: int
    best_trial: FrozenTrial | None
    stopped_because: str
    seconds: float
    unreadable: list[tuple[str, str]]
    loader_skipped: list[tuple[str, str]]

    @property
    def ok(self) -> bool:
        return not self.stopped_because.startswith("stopped after")


def run_search(options: SearchOptions, registry: Registry, listener: SearchListener | None = None) -> SearchSummary:
    """Run trials until ``options.trials`` are finished (completed or pruned) or the time is up."""
    listener = listener or SearchListener()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported by the listener instead
    if options.objective not in OBJECTIVES:
        raise StudyError(f"unknown objective {options.objective!r}; choose from {', '.join(OBJECTIVES)}")
    loader = registry.get("dataset", options.dataset)
    architecture = registry.get("architecture", options.architecture)
    storage_url = options.storage
    storage = open_storage(storage_url)
    name = options.study or default_study_name(options.dataset, options.source)
    existing = name in study_names(storage)
    study = optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True,
        direction="maximize" if OBJECTIVES[options.objective] else "minimize",
        sampler=_sampler(options.seed, 0), pruner=_pruner(),
    )
    config = StudyConfig.of(study) if existing else None
    if config is not None:
        config.check_same_search(name, dataset=options.dataset, architecture=options.architecture,
                                 objective=options.objective)
        data = open_data(name, loader, options.source, config.split_seed, expected_hash=config.split_hash)
    else:
        data = open_data(name, loader, options.source, options.seed or 0)
        config = _new_config(options, architecture, data)
        config.save(study)
    # Reseed per run so a resumed study does not replay the trials it already has.
    study.sampler = _sampler(options.seed, len(study.trials))
    done = _count(study, FINISHED)
    listener.study_ready(name, redact(storage_url or "") or "default", data, config, done)
    objective = _Objective(options, config, data, architecture, listener)
    started = time.time()
    deadline = started + options.timeout if options.timeout else None
    stopped_because = ""
    while not stopped_because:
        _fail_trials_of_dead_local_workers(study)
        finished = _count(study, FINISHED)
        running = _count(study, (TrialState.RUNNING,))
        if finished >= options.trials:
            stopped_because = f"the study has {finished} finished trials (asked for {options.trials})"
        elif finished + running >= options.trials:
            stopped_because = f"the remaining {running} trial(s) are running on other workers"
        elif deadline is not None and time.time() >= deadline:
            stopped_because = f"time limit of {options.timeout:g} s reached"
        elif objective.budget_taken:
            stopped_because = f"the study's {options.trials} trials are all taken"
        elif objective.consecutive_failures >= options.max_consecutive_failures:
            stopped_because = (f"stopped after {objective.consecutive_failures} failed trials in a row; "
                               f"the last one: {objective.last_failure}")
        else:
            objective.deadline = deadline
            study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            if not objective.budget_taken:
                listener.trial_finished(study.trials[objective.last_number])
    return _summary(study, options, redact(storage_url or "default"), stopped_because, time.time() - started,
                    objective.unreadable, list(data.loader_skipped))


def _new_config(options: SearchOptions, architecture: Entry, data: StudyData) -> StudyConfig:
    image_set = data.split.image_set
    native = probe_native_shape([image_set.absolute(p) for p in image_set.paths], seed=options.seed or 0)
    return StudyConfig(
        dataset=options.dataset,
        source=str(image_set.root.resolve()) if options.source else None,
        architecture=options.architecture,
        objective=options.objective,
        channels=architecture.channels or native.channels,
        image_sizes=default_image_sizes(native.size),
        split_seed=data.split.seed,
        split_hash=data.split.hash,
        class_names=list(image_set.class_names),
    )


class _Objective:
    """One trial: sample, decode (cached), build, train, record; raises TrialFailed for a trial's own faults."""

    def __init__(self, options: SearchOptions, config: StudyConfig, data: StudyData, architecture: Entry,
                 listener: SearchListener):
        self.options, self.config, self.data = options, config, data
        self.architecture, self.listener = architecture, listener
        self.deadline: float | None = None
        self.consecutive_failures = 0
        self.last_failure = ""
        self.last_number: int | None = None
        self.budget_taken = False
        self.unreadable: list[tuple[str, str]] = []

    def __call__(self, trial: optuna.Trial) -> float:
        self.last_number = trial.number
        trial.set_user_attr("worker", _worker_identity())
        if self._surplus(trial):
            self.budget_taken = True
            trial.set_user_attr("surplus", True)
            raise TrialFailed(f"not run: the study's {self.options.trials} trials were already taken by other workers")
        try:
            value = self._run(trial)
        except TrialFailed as exc:
            self.consecutive_failures += 1
            self.last_failure = str(exc)
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            raise
        self.consecutive_failures = 0
        return value

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Workers that asked for a trial at the same moment: the later numbers give way."""
        taken = trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        return sum(t.number < trial.number for t in taken) >= self.options.trials

    def _run(self, trial: optuna.Trial) -> float:
        from automl_img import training  # TensorFlow loads here, not at start-up

        hp = TrialHyperParameters(trial, self.options.overrides)
        params = sample_training_params(hp, self.config.image_sizes)
        decoded = self.data.cache.load(
            params.image_size, self.config.channels,
            lambda done, total: self.listener.decode_progress(params.image_size, done, total),
        )
        self.unreadable = self.data.unreadable_files(decoded)
        train_rows, val_rows = self.data.rows("train", decoded), self.data.rows("val", decoded)
        if len(train_rows) == 0 or len(val_rows) == 0:
            raise DataError("no readable images left in the train or val split; check the skipped files listed above")
        seed = (self.options.seed if self.options.seed is not None else 0) + trial.number
        trial.set_user_attr("seed", seed)
        training.keras.utils.set_random_seed(seed)
        try:
            model = training.build_model(self.architecture.obj, hp, params.image_size, self.config.channels,
                                         len(self.config.class_names), params.learning_rate)
            unused = hp.unused_overrides()
            if unused:
                raise StudyError(f"parameter(s) {', '.join(unused)} are not in the search space; "
                                 f"known: {', '.join(sorted(hp.values))}")
            self.listener.trial_started(trial.number, dict(trial.params))
            limits = training.Limits(self.options.epochs, self.options.patience, self.deadline,
                                     self.options.trial_timeout)
            result = training.train(model, decoded.images, self.data.labels, train_rows, val_rows, params, limits,
                                    self.options.objective, _Reporter(trial, self.listener), seed=seed)
            trial.set_user_attr("history", result.history)
            trial.set_user_attr("stopped_by", result.stopped_by)
            trial.set_user_attr("seconds", round(result.seconds, 2))
            if result.pruned:
                self.consecutive_failures = 0
                raise optuna.TrialPruned(f"pruned after epoch {result.epochs_run}")
            weights = f"trials/{trial.number}/best.weights.h5"  # relative to the study's folder
            training.save_weights(model, study_dir(trial.study.study_name) / weights)
        except (DataError, StudyError, optuna.TrialPruned, TrialFailed):
            raise
        except PluginError as exc:
            raise TrialFailed(str(exc)) from exc
        except Exception as exc:  # a plugin's bug, an out-of-memory batch size...: this trial only
            raise TrialFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            training.keras.backend.clear_session()
            gc.collect()
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("val_scores", result.best_scores)
        trial.set_user_attr("weights", weights)
        return float(result.best_value)


class _Reporter:
    def __init__(self, trial: optuna.Trial, listener: SearchListener):
        self.trial, self.listener = trial, listener

    def report(self, value: float, step: int) -> None:
        self.trial.report(value, step)
        self.listener.epoch_done(self.trial.number, step, value)

    def should_prune(self) -> bool:
        return self.trial.should_prune()


def _sampler(seed: int | None, trials_so_far: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=None if seed is None else seed + trials_so_far, multivariate=True, n_startup_trials=8,
        )


def _pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3)


def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _worker_identity() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": _process_start(os.getpid())}


def _process_start(pid: int) -> str | None:
    """The process's start time since boot (tells a reused pid apart); None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _fail_trials_of_dead_local_workers(study: optuna.Study) -> None:
    """A trial left RUNNING by a killed process on this machine is marked failed at once.

    Trials of other machines are failed by Optuna's heartbeat after its grace period instead.
    """
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") != host or worker.get("pid") == os.getpid():
            continue
        if _process_start(worker["pid"]) == worker.get("pid_started") and _alive(worker["pid"]):
            continue
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                    f"worker process {worker['pid']} on {host} ended during the trial")
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _summary(study: optuna.Study, options: SearchOptions, storage: str, stopped_because: str, seconds: float,
             unreadable: list[tuple[str, str]], loader_skipped: list[tuple[str, str]]) -> SearchSummary:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    states = [t.state for t in trials]
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    return SearchSummary(
        study_name=study.study_name, storage=storage, objective=options.objective,
        completed=len(completed), pruned=states.count(TrialState.PRUNED), failed=states.count(TrialState.FAIL),
        running=states.count(TrialState.RUNNING), best_trial=study.best_trial if completed else None,
        stopped_because=stopped_because, seconds=seconds, unreadable=unreadable, loader_skipped=loader_skipped,
    )
