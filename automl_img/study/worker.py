"""Each trial runs in a fresh child process.

Measured (benchmarks/trial_memory.py): TensorFlow keeps ~10 MB per model built and fitted in a
process even after ``clear_session()`` and ``gc.collect()``, so a long search grows without bound
in one process. A child per trial costs a few seconds of start-up (importing TensorFlow) and gives
back every byte when it exits; it also confines a crash (segfault, out-of-memory kill) to the
trial in flight. The child dies with its parent, so a killed search leaves no orphan training.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl_img import errors
from automl_img.study.config import StudyConfig, StudyData
from automl_img.study.objective import TrialSettings

_CONTEXT = multiprocessing.get_context("spawn")  # a clean interpreter: never fork a process running TensorFlow
_KILL_GRACE_SECONDS = 60


@dataclass(frozen=True)
class TrialJob:
    """Everything the child needs to run one trial of the study (pickled across)."""

    storage_url: str | None
    study_name: str
    sampler: str
    pruner: str
    sampler_seed: int | None
    settings: TrialSettings
    config: StudyConfig
    data: StudyData
    architecture: str
    plugin_dirs: list[Path] | None
    third_party: bool | None
    extra_plugins: list[Any] = field(default_factory=list)  # registered in-process; must be picklable


@dataclass
class TrialRun:
    """What the parent learned from one child."""

    number: int | None = None
    exit_code: int | None = None
    fatal: errors.AutomlImgError | None = None
    interrupted: bool = False
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def run_trial_process(job: TrialJob, listener: Any) -> TrialRun:
    """Run one trial in a child, relaying its progress events to ``listener``."""
    events = _CONTEXT.Queue()
    child = _CONTEXT.Process(target=_child_main, args=(job, os.getpid(), events), name="automl-img-trial")
    run = TrialRun()
    child.start()
    started = time.time()
    try:
        while True:
            try:
                _dispatch(events.get(timeout=0.2), run, listener)
            except queue.Empty:
                if not child.is_alive():
                    break
                limit = job.settings.trial_timeout
                if limit is not None and time.time() - started > limit + _KILL_GRACE_SECONDS:
                    child.kill()  # an epoch that never ends; the trial is reaped as failed
        child.join()
    except KeyboardInterrupt:
        if child.is_alive():
            child.terminate()  # SIGTERM: the child marks its trial failed, then exits
            child.join(timeout=30)
        run.interrupted = True
    while True:  # events still in the pipe when the child exited
        try:
            _dispatch(events.get_nowait(), run, listener)
        except (queue.Empty, EOFError, OSError):
            break
    run.exit_code = child.exitcode
    return run


def _dispatch(event: tuple, run: TrialRun, listener: Any) -> None:
    name, *args = event
    if name == "number":
        run.number = args[0]
    elif name == "unreadable":
        run.unreadable = args[0]
    elif name == "fatal":
        kind, message = args
        run.fatal = getattr(errors, kind, errors.AutomlImgError)(message)
    elif name == "interrupted":
        run.interrupted = True
    else:
        getattr(listener, name)(*args)


def _child_main(job: TrialJob, parent_pid: int, events) -> None:
    _die_with_parent(parent_pid)
    _interrupt_on_sigterm()
    import optuna

    from automl_img.plugins import load_plugins, pm
    from automl_img.study.objective import Objective, enqueue_defaults
    from automl_img.study.search import make_pruner, make_sampler
    from automl_img.study.storage import open_storage

    def emit(name: str, *args: Any) -> None:
        events.put((name, *args))

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    objective = None
    try:
        for plugin in job.extra_plugins:
            if not pm.is_registered(plugin):
                pm.register(plugin)
        build = load_plugins(job.plugin_dirs, job.third_party).get("architecture", job.architecture).implementation
        study = optuna.load_study(study_name=job.study_name, storage=open_storage(job.storage_url),
                                  sampler=make_sampler(job.sampler, job.sampler_seed),
                                  pruner=make_pruner(job.pruner, job.settings.epochs))
        if not study.trials:
            enqueue_defaults(study, job.settings, job.config, build)
        objective = Objective(job.settings, job.config, job.data, build, emit)
        study.optimize(objective, n_trials=1, catch=(errors.TrialFailed,))
    except errors.AutomlImgError as exc:
        emit("fatal", type(exc).__name__, str(exc))
    except KeyboardInterrupt:
        emit("interrupted")
    finally:
        if objective is not None and objective.last_number is not None:
            emit("number", objective.last_number)
        events.close()
        events.join_thread()


def _interrupt_on_sigterm() -> None:
    """Ctrl-C reaches the whole process group; only the parent acts on it, then sends SIGTERM
    here once, which interrupts training like Ctrl-C would, so the trial is marked failed."""

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, interrupt)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this child when the search process dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
