"""The search: create or resume a study, run trials until the budget is spent, summarise."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from automl_img.data.audit import exact_copies
from automl_img.data.decode import probe_native_shape
from automl_img.data.imageset import read_exclusions
from automl_img.errors import StudyError
from automl_img.hookspecs import Architecture
from automl_img.models import families
from automl_img.models.metrics import OBJECTIVES
from automl_img.plugins import Entry, Registry
from automl_img.searching.fidelity import START_SECONDS, epoch_levels, final_phase, next_promotion, shortest_training
from automl_img.searching.options import SearchOptions
from automl_img.searching.plan import INTERRUPTED, Stop, StopReason, TrialRun, TrialSpec
from automl_img.searching.progress import SearchListener
from automl_img.searching.runners import TrialRunner, default_runner, run_trial_process
from automl_img.space import default_image_sizes
from automl_img.study import records
from automl_img.study.artifacts import check_store
from automl_img.study.config import StudyConfig, StudyData, default_study_name, imbalance, open_data
from automl_img.study.handle import TRIALS_LOG, StoredStudy, TrialCounts, stored_config
from automl_img.study.records import TrialRecord
from automl_img.study.storage import open_storage, redact, study_names

# A worker that finds the study just created (no trial yet) waits this long for its creator's configuration, which
# follows the creation at once (the creator read the data before).
_CREATION_SECONDS = 5
IMBALANCE_THRESHOLD = 1.5  # largest / smallest class in train: class weights switch on from here


@dataclass
class SearchSummary:
    study_name: str
    storage: str | None  # redacted; None for the default storage
    objective: str
    counts: TrialCounts
    best_trial: TrialRecord | None
    stop: StopReason
    seconds: float
    unreadable: list[tuple[str, str]]
    loader_skipped: list[tuple[str, str]]
    skipped_file: Path  # every left-out file, with the reason

    @property
    def stopped_because(self) -> str:
        return self.stop.text

    @property
    def interrupted(self) -> bool:
        return self.stop.kind == Stop.INTERRUPTED

    @property
    def ok(self) -> bool:
        return self.stop.ok


def run_search(
    options: SearchOptions,
    registry: Registry,
    listener: SearchListener | None = None,
    runner: TrialRunner | None = None,
) -> SearchSummary:
    """Run trials until ``options.trials`` have finished or the time is up; each in a child process unless
    ``runner`` (or AUTOML_IMG_TRIAL_RUNNER) says otherwise. Several workers always run trial processes."""
    listener = listener or SearchListener()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported by the listener instead
    # a plugin that cannot reach the trial processes stops here, with no study made
    pickle.dumps(registry.plugin_source)
    if options.artifacts:  # a store that cannot be written stops here too
        check_store(options.artifacts)
    stored, data = prepare_study(options, registry)
    if stored.config.artifacts and not options.artifacts:  # a resumed study's store, checked on this machine
        check_store(stored.config.artifacts)
    data.cache.fingerprint  # noqa: B018 - stat the files once here, not in every trial process
    stored.record_skipped(list(data.loader_skipped), unreadable=None)
    listener.study_ready(stored, data)

    started = time.time()
    deadline = started + options.timeout if options.timeout else None
    runner = run_trial_process if options.workers > 1 else runner or default_runner()
    pool = _Pool(
        stored, options, data, registry, _OneAtATime(listener) if options.workers > 1 else listener, deadline, runner
    )
    threads = [
        threading.Thread(target=pool.work, args=(worker,), name=f"automl-img-worker-{worker}", daemon=True)
        for worker in range(1, options.workers)
    ]
    try:
        for thread in threads:
            thread.start()
        pool.work(0)  # Ctrl-C reaches this thread only; it stops the others through ``pool.stop``
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)
    except KeyboardInterrupt:
        pool.interrupted()
    finally:
        pool.stop.set()
        for thread in threads:
            thread.join()
        stored.record_skipped(list(data.loader_skipped), pool.unreadable if pool.trial_ran else None)
    if pool.fatal is not None:
        raise pool.fatal
    storage_shown = redact(options.storage) if options.storage else None
    return SearchSummary(
        stored.name,
        storage_shown,
        stored.config.objective,
        stored.counts(),
        stored.best_trial(),
        pool.stopped_because(deadline),
        time.time() - started,
        pool.unreadable,
        list(data.loader_skipped),
        stored.skipped_file,
    )


class _Pool:
    """``--workers`` loops on one study in this process, each running one trial at a time."""

    def __init__(
        self,
        stored: StoredStudy,
        options: SearchOptions,
        data: StudyData,
        registry: Registry,
        listener: SearchListener,
        deadline: float | None,
        runner: TrialRunner,
    ):
        self.stored, self.options, self.data, self.registry = stored, options, data, registry
        self.listener, self.deadline, self.runner = listener, deadline, runner
        self.stop = threading.Event()  # set on Ctrl-C or a fatal error: every worker ends its trial and stops
        self.starting = threading.Lock()  # one worker at a time decides to start a trial and queues promotions
        self.devices = _gpus()
        self.reasons: list[StopReason] = []
        self.unreadable: list[tuple[str, str]] = []
        self.trial_ran = False  # a trial decoded the images, so ``unreadable`` is this run's complete list
        self.fatal: Exception | None = None

    def work(self, worker: int) -> None:
        stored, options, study = self.stored, self.options, self.stored.study
        failures: list[str] = []  # reasons of this worker's consecutive failed trials
        try:
            while worker and not study.get_trials(deepcopy=False) and not self.stop.wait(0.2):
                pass  # a new study's first trial process queues its defaults; the others start after that
            while True:
                with self.starting:
                    reason = (
                        INTERRUPTED if self.stop.is_set() else _stop_reason(stored, options, self.deadline, failures)
                    )
                    if reason is not None:
                        break
                    _queue_promotion(stored, options, self.deadline, len(self.data.split.indices("train")))
                    seed = None if options.seed is None else options.seed + len(study.trials) + 7919 * worker
                device = self.devices[worker % len(self.devices)] if self.devices else None
                spec = TrialSpec(
                    options,
                    stored.name,
                    stored.config,
                    self.data,
                    self.registry.plugin_source,
                    sampler_seed=seed,
                    deadline=self.deadline,
                    device=device,
                )
                run = self.runner(spec, self.listener, self.stop)
                self.trial_ran = self.trial_ran or run.number is not None
                self.unreadable = run.unreadable or self.unreadable
                if run.fatal is not None:
                    raise run.fatal
                trial = _finished_trial(stored, run)
                if run.interrupted:
                    raise KeyboardInterrupt
                assert trial is not None  # None only for an interrupted run
                if trial.surplus:
                    reason = StopReason(Stop.TAKEN, f"the study's {options.trials} trials are all taken")
                    break
                if trial.state != TrialState.FAIL:
                    failures = []
                elif not trial.time_limited:  # the time limit's doing, not the trial's
                    failures = failures + [trial.fail_reason or ""]
                self.listener.trial_finished(trial)
        except KeyboardInterrupt:
            self.interrupted()
            return
        except Exception as exc:  # noqa: BLE001 - a fatal error in one worker stops them all, then run_search raises it
            self.fatal = self.fatal or exc
            self.stop.set()
            return
        self.reasons.append(reason)

    def interrupted(self) -> None:
        self.reasons.append(INTERRUPTED)
        self.stop.set()

    def stopped_because(self, deadline: float | None) -> StopReason:
        """An interruption, else repeated failures, else where the study's budget stands now."""
        for kind in (Stop.INTERRUPTED, Stop.FAILURES):
            for reason in self.reasons:
                if reason.kind == kind:
                    return reason
        return _stop_reason(self.stored, self.options, deadline, []) or self.reasons[0]


class _OneAtATime(SearchListener):
    """Several workers report to one display, one event at a time."""

    def __init__(self, listener: SearchListener):
        self.listener, self.lock = listener, threading.Lock()

    def decode_progress(self, *args) -> None:
        with self.lock:
            self.listener.decode_progress(*args)

    def trial_started(self, *args) -> None:
        with self.lock:
            self.listener.trial_started(*args)

    def epoch_done(self, *args) -> None:
        with self.lock:
            self.listener.epoch_done(*args)

    def trial_finished(self, *args) -> None:
        with self.lock:
            self.listener.trial_finished(*args)


def _gpus() -> list[str]:
    """This machine's GPUs, one per worker in turn (each trial process sees only its own); none: [] ."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [device.strip() for device in visible.split(",") if device.strip() and device.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(index) for index, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]


def _stop_reason(
    stored: StoredStudy, options: SearchOptions, deadline: float | None, failures: list[str]
) -> StopReason | None:
    """Why no further trial should start now; None while the budget allows one."""
    fail_trials_of_dead_local_workers(stored)
    counts = stored.counts()
    finished, running = counts.finished, counts.running
    if finished >= options.trials:
        return StopReason(Stop.TRIALS, f"the study has {finished} finished trials (asked for {options.trials})")
    if finished + running >= options.trials:
        return StopReason(Stop.ELSEWHERE, f"the remaining {running} trial(s) are running on other workers")
    if deadline is not None and time.time() >= deadline:
        return StopReason(Stop.TIME, f"time limit of {options.timeout:g} s reached")
    shortest = shortest_training(stored.trials()) if deadline is not None else None
    if deadline is not None and shortest is not None and deadline - time.time() < shortest + START_SECONDS:
        return StopReason(
            Stop.TIME,
            f"time limit of {options.timeout:g} s reached: the {max(deadline - time.time(), 0):.0f} s left "
            f"would not fit a trial (the shortest took {shortest:.0f} s)",
        )
    if len(failures) >= options.max_failures:
        return StopReason(
            Stop.FAILURES, f"stopped after {len(failures)} failed trials in a row; the last one: {failures[-1]}"
        )
    return None


def _queue_promotion(stored: StoredStudy, options: SearchOptions, deadline: float | None, train_images: int) -> None:
    """Queue the next configuration due for a longer training (search/fidelity.py), unless a queued trial waits."""
    trials = stored.trials()
    if any(trial.state == TrialState.WAITING for trial in trials):
        return
    seconds_left = None if deadline is None else deadline - time.time()
    promotion = next_promotion(
        trials,
        epoch_levels(options.epochs, options.trials),
        stored.larger_is_better,
        seconds_left,
        final_phase(seconds_left, options.timeout),
        train_images,
    )
    if promotion is not None:
        records.enqueue(stored.study, promotion.params, epochs=promotion.epochs, promoted_from=promotion.parent)


def prepare_study(options: SearchOptions, registry: Registry) -> tuple[StoredStudy, StudyData]:
    """Create the study (config, split) or reopen it, refusing a resume with different settings."""
    loader = registry.get("dataset", options.dataset)
    architectures = [registry.get("architecture", name) for name in families.names(options.architecture)]
    storage = open_storage(options.storage)
    name = options.study or default_study_name(options.dataset, options.source)
    if name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        config = stored_config(study, wait=0 if study.get_trials(deepcopy=False) else _CREATION_SECONDS)
        config.check_same_search(
            name,
            dataset=options.dataset,
            architecture=",".join(families.names(options.architecture)),
            objective=options.objective,
            artifacts=options.artifacts,
            ordinal=options.is_ordinal or None,
            class_names=options.grade_order,
        )
        if options.exclude and set(read_exclusions(options.exclude)) != set(config.excluded):
            raise StudyError(
                f"study {name!r} fixed its files when it was created; to leave out others, start a new study "
                "with --study NEW_NAME"
            )
        data = open_data(
            name, loader, options.source, config.split_seed, expected_hash=config.split_hash, excluded=config.excluded
        )
    else:  # read the data first: a wrong path or layout leaves no empty study behind
        grades = options.grade_order or [] if options.is_ordinal else None
        excluded = read_exclusions(options.exclude) if options.exclude else []
        data = open_data(name, loader, options.source, options.seed or 0, grades=grades, excluded=excluded)
        data.exact_copies = exact_copies(data.split.image_set, data.split.parts)
        config = _new_config(options, architectures, data, excluded)
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            load_if_exists=True,
            direction="maximize" if OBJECTIVES[options.ranked_by] else "minimize",
        )
        config.save(study)
    return StoredStudy(study, config, options.storage), data


def _finished_trial(stored: StoredStudy, run: TrialRun) -> TrialRecord | None:
    """The child's trial, failed here if the child died without finishing it."""
    if run.number is None and run.interrupted:
        return None
    if run.number is None:
        raise StudyError(
            f"the trial process exited (code {run.exit_code}) before it could start a trial; "
            "run with the same options again, or report this as a bug"
        )
    trial = TrialRecord.of(stored.study.trials[run.number])
    if trial.state == TrialState.RUNNING:
        fail_trials_of_dead_local_workers(stored, reason=_exit_reason(run.exit_code, stored.folder / TRIALS_LOG))
        trial = TrialRecord.of(stored.study.trials[run.number])
    return trial


def _exit_reason(exit_code: int | None, log: Path) -> str:
    if exit_code is not None and exit_code < 0:
        name = signal.Signals(-exit_code).name
        hint = " (out of memory? try smaller image sizes or batch sizes)" if name == "SIGKILL" else ""
        return f"the trial process was killed by {name}{hint}"
    return f"the trial process ended with exit code {exit_code} during the trial; its last lines are in {log}"


def _new_config(
    options: SearchOptions, architectures: list[Entry[Architecture]], data: StudyData, excluded: list[str]
) -> StudyConfig:
    image_set = data.split.image_set
    native = probe_native_shape([image_set.absolute(p) for p in image_set.paths], seed=options.seed or 0)
    skew = imbalance(image_set.labels, data.split.indices("train"))
    sizes = {entry.name: default_image_sizes(native.size, entry.min_image_size) for entry in architectures}
    return StudyConfig(
        dataset=options.dataset,
        source=str(image_set.root.resolve()) if options.source else None,
        architecture=",".join(sizes),
        objective=options.ranked_by,
        ordinal=options.is_ordinal,
        channels=max(entry.channels or native.channels for entry in architectures),
        image_sizes=sizes[architectures[0].name],
        family_image_sizes=sizes if len(sizes) > 1 else None,
        split_seed=data.split.seed,
        split_hash=data.split.hash,
        class_names=list(image_set.class_names),
        balance_classes=options.class_weights == "on"
        or (options.class_weights == "auto" and skew >= IMBALANCE_THRESHOLD),
        artifacts=options.artifacts,
        excluded=excluded,
    )


def fail_trials_of_dead_local_workers(stored: StoredStudy, reason: str | None = None) -> None:
    """A trial left RUNNING by a dead process of this machine is marked failed at once.

    Trials of other machines are failed by Optuna's heartbeat after its grace period instead.
    """
    study, storage = stored.study, None
    for trial in records.trial_records(study, (TrialState.RUNNING,)):
        worker = trial.worker
        if worker is None or not worker.ended_on_this_machine():
            continue
        # Storage-level calls: the trial belongs to a process that no longer exists.
        storage = storage or open_storage(stored.storage_url)
        records.write_to_storage(
            storage,
            study.study_name,
            trial.number,
            fail_reason=reason or f"its process {worker.pid} on {worker.host} ended during the trial",
        )
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
