"""The search: create or resume a study, run trials until the budget is spent, summarise."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl_img.data.decode import probe_native_shape
from automl_img.errors import StudyError
from automl_img.metrics import OBJECTIVES
from automl_img.plugins import Entry, Registry, in_process_plugins
from automl_img.space import Override, Range, default_image_sizes
from automl_img.study.config import StudyConfig, StudyData, default_study_name, imbalance, open_data
from automl_img.study.objective import FINISHED, TrialSettings, process_start
from automl_img.study.storage import default_storage_url, open_storage, redact, study_names
from automl_img.study.worker import TrialJob, TrialRun, run_trial_process

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
CLASS_WEIGHTS = ("auto", "on", "off")
IMBALANCE_THRESHOLD = 1.5  # largest / smallest class in train: class weights switch on from here


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
    sampler: str = "tpe"
    pruner: str = "median"
    class_weights: str = "auto"  # auto: on when the largest class is 1.5x the smallest or more; on; off
    overrides: dict[str, Override] = field(default_factory=dict)
    max_consecutive_failures: int = 5

    def as_command(self) -> str:
        """The equivalent ``automl-img search`` command line (recorded with each trial, to reproduce it)."""
        defaults = SearchOptions()
        words = ["automl-img", "search"] + ([self.source] if self.source else [])
        flags = {"max_consecutive_failures": "--max-failures"}
        for name in ("dataset", "architecture", "study", "trials", "timeout", "epochs", "patience", "trial_timeout",
                     "max_consecutive_failures", "seed", "objective", "sampler", "pruner", "class_weights"):
            value = getattr(self, name)
            if value != getattr(defaults, name):
                words += [flags.get(name, f"--{name.replace('_', '-')}"), str(value)]
        for name, override in self.overrides.items():
            text = (f"{override.low}..{override.high}" if isinstance(override, Range)
                    else ",".join(map(str, override)) if isinstance(override, list) else str(override))
            words += ["-p", f"{name}={text.lower() if isinstance(override, bool) else text}"]
        if self.storage:
            words += ["--storage", redact(self.storage)]
        return shlex.join(words)


class SearchListener:
    """What the search tells its caller as it goes; every method is optional."""

    def study_ready(self, study_name: str, storage: str, data: StudyData, config: StudyConfig, done: int,
                    best: FrozenTrial | None = None) -> None: ...

    def decode_progress(self, image_size: int, done: int, total: int) -> None: ...

    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...

    def epoch_done(self, number: int, epoch: int, value: float) -> None: ...

    def trial_finished(self, trial: FrozenTrial) -> None: ...


@dataclass
class SearchSummary:
    study_name: str
    storage: str | None  # redacted; None for the default storage
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
    def interrupted(self) -> bool:
        return self.stopped_because.startswith("interrupted")

    @property
    def ok(self) -> bool:
        return not (self.interrupted or self.stopped_because.startswith("stopped after"))


def run_search(options: SearchOptions, registry: Registry, listener: SearchListener | None = None) -> SearchSummary:
    """Run trials, each in a child process, until ``options.trials`` have finished or the time is up."""
    listener = listener or SearchListener()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported by the listener instead
    for kind, value, known in (("objective", options.objective, OBJECTIVES), ("sampler", options.sampler, SAMPLERS),
                               ("pruner", options.pruner, PRUNERS),
                               ("class weights setting", options.class_weights, CLASS_WEIGHTS)):
        if value not in known:
            raise StudyError(f"unknown {kind} {value!r}; choose from {', '.join(known)}")
    study, config, data = prepare_study(options, registry)
    name = study.study_name
    data.cache.fingerprint  # noqa: B018 - stat the files once here, not in every trial process
    storage_shown = redact(options.storage) if options.storage else None
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    listener.study_ready(name, storage_shown or f"the default storage ({default_storage_url()})", data, config,
                         _count(study, FINISHED), study.best_trial if completed else None)

    started = time.time()
    deadline = started + options.timeout if options.timeout else None
    settings = TrialSettings(options.trials, options.epochs, options.patience, options.objective,
                             options.overrides, options.seed, deadline, options.trial_timeout, options.as_command())
    unreadable: list[tuple[str, str]] = []
    failures: list[str] = []  # reasons of this run's consecutive failed trials
    stopped_because = ""
    try:
        while not (stopped_because := _stop_reason(study, options, deadline, failures)):
            # Reseeded per trial, so a resumed study never replays the trials it already has.
            job = TrialJob(options.storage, name, options.sampler, options.pruner,
                           None if options.seed is None else options.seed + len(study.trials),
                           settings, config, data, options.architecture, registry.plugin_dirs,
                           registry.third_party, extra_plugins=in_process_plugins())
            run = run_trial_process(job, listener)
            unreadable = run.unreadable or unreadable
            if run.fatal is not None:
                raise run.fatal
            trial = _finished_trial(study, run)
            if run.interrupted:
                raise KeyboardInterrupt
            if trial.user_attrs.get("surplus"):
                stopped_because = f"the study's {options.trials} trials are all taken"
                break
            failures = failures + [trial.user_attrs.get("fail_reason", "")] if trial.state == TrialState.FAIL else []
            listener.trial_finished(trial)
    except KeyboardInterrupt:
        stopped_because = "interrupted (Ctrl-C)"
    return _summary(study, options, storage_shown, stopped_because, time.time() - started, unreadable,
                    list(data.loader_skipped))


def _stop_reason(study: optuna.Study, options: SearchOptions, deadline: float | None, failures: list[str]) -> str:
    """Why no further trial should start now; empty while the budget allows one."""
    fail_trials_of_dead_local_workers(study)
    finished = _count(study, FINISHED)
    running = _count(study, (TrialState.RUNNING,))
    if finished >= options.trials:
        return f"the study has {finished} finished trials (asked for {options.trials})"
    if finished + running >= options.trials:
        return f"the remaining {running} trial(s) are running on other workers"
    if deadline is not None and time.time() >= deadline:
        return f"time limit of {options.timeout:g} s reached"
    if len(failures) >= options.max_consecutive_failures:
        return f"stopped after {len(failures)} failed trials in a row; the last one: {failures[-1]}"
    return ""


def prepare_study(options: SearchOptions, registry: Registry) -> tuple[optuna.Study, StudyConfig, StudyData]:
    """Create the study (config, split) or reopen it, refusing a resume with different settings."""
    loader = registry.get("dataset", options.dataset)
    architecture = registry.get("architecture", options.architecture)
    storage = open_storage(options.storage)
    name = options.study or default_study_name(options.dataset, options.source)
    existing = name in study_names(storage)
    if not existing:  # read the data first: a wrong path or layout leaves no empty study behind
        data = open_data(name, loader, options.source, options.seed or 0)
        config = _new_config(options, architecture, data)
    study = optuna.create_study(
        study_name=name, storage=storage, load_if_exists=True,
        direction="maximize" if OBJECTIVES[options.objective] else "minimize",
    )
    if existing:
        config = StudyConfig.of(study)
        config.check_same_search(name, dataset=options.dataset, architecture=options.architecture,
                                 objective=options.objective)
        data = open_data(name, loader, options.source, config.split_seed, expected_hash=config.split_hash)
    else:
        config.save(study)
    return study, config, data


def _finished_trial(study: optuna.Study, run: TrialRun) -> FrozenTrial | None:
    """The child's trial, failed here if the child died without finishing it."""
    if run.number is None and run.interrupted:
        return None
    if run.number is None:
        raise StudyError(f"the trial process exited (code {run.exit_code}) before it could start a trial; "
                         "run with the same options again, or report this as a bug")
    trial = study.trials[run.number]
    if trial.state == TrialState.RUNNING:
        fail_trials_of_dead_local_workers(study, reason=_exit_reason(run.exit_code))
        trial = study.trials[run.number]
    return trial


def _exit_reason(exit_code: int | None) -> str:
    if exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name
        hint = " (out of memory? try smaller image sizes or batch sizes)" if name == "SIGKILL" else ""
        return f"the trial process was killed by {name}{hint}"
    return f"the trial process ended with exit code {exit_code} during the trial"


def _new_config(options: SearchOptions, architecture: Entry, data: StudyData) -> StudyConfig:
    image_set = data.split.image_set
    native = probe_native_shape([image_set.absolute(p) for p in image_set.paths], seed=options.seed or 0)
    skew = imbalance(image_set.labels, data.split.indices("train"))
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
        balance_classes=options.class_weights == "on"
        or (options.class_weights == "auto" and skew >= IMBALANCE_THRESHOLD),
    )


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3)


def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def fail_trials_of_dead_local_workers(study: optuna.Study, reason: str | None = None) -> None:
    """A trial left RUNNING by a dead process of this machine is marked failed at once.

    Trials of other machines are failed by Optuna's heartbeat after its grace period instead.
    """
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") != host:
            continue
        if process_start(worker["pid"]) == worker.get("pid_started") and _alive(worker["pid"]):
            continue
        # Storage-level calls: the trial belongs to a process that no longer exists.
        study._storage.set_trial_user_attr(
            trial._trial_id, "fail_reason", reason or f"its process {worker['pid']} on {host} ended during the trial")
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _summary(study: optuna.Study, options: SearchOptions, storage: str | None, stopped_because: str, seconds: float,
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
