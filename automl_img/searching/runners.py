"""Trial runners: the search loop hands each a ``TrialSpec`` and gets a ``TrialRun`` back.

``run_trial_process``, the default, runs each trial in a fresh child process. Measured
(benchmarks/trial_memory.py): TensorFlow keeps ~10 MB per model built and fitted in a process even
after ``clear_session()`` and ``gc.collect()``, so a long search grows without bound in one process.
A child per trial gives back every byte when it exits; it also confines a crash (segfault,
out-of-memory kill) to the trial in flight. The child dies with its parent, so a killed search leaves
no orphan training.

On Linux, children are forked from a server process that imported TensorFlow once (``preload``) and
never ran it, so a trial starts in a fraction of a second instead of importing TensorFlow for ~5 s.
The child takes the search's current environment and folder, as a freshly spawned one would. Where a
GPU driver is present, each child is spawned from scratch instead: CUDA must be initialised after the
fork, and that path is not tested on a GPU here.

``run_trial_here`` runs the same trial in the search's own process: no start-up cost, for short
searches (the tests, a notebook's first try) where memory growth and crash isolation do not matter.
Both run ``run_one_trial``; only the process boundary differs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Protocol

from automl_img import errors
from automl_img.native_output import output_to
from automl_img.searching.plan import TrialReport, TrialRun, TrialSpec
from automl_img.searching.progress import ProgressEvent, SearchListener
from automl_img.study.config import study_dir
from automl_img.study.handle import TRIALS_LOG

_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, AMD ROCm, WSL
_KILL_GRACE_SECONDS = 60
RUNNER_ENV = "AUTOML_IMG_TRIAL_RUNNER"  # "process" (the default) or "here"


class TrialRunner(Protocol):
    def __call__(self, spec: TrialSpec, listener: SearchListener, stop: threading.Event | None = None) -> TrialRun:
        """Run the study's next trial, relaying its progress to ``listener``; ``stop`` (another worker's Ctrl-C)
        interrupts it as Ctrl-C would."""
        ...


def run_one_trial(spec: TrialSpec, emit: Callable[[ProgressEvent], None]) -> TrialReport:
    """Load the study, ask Optuna for its next trial and run it (``searching.trial.Objective``)."""
    import optuna
    from optuna.trial import TrialState

    from automl_img.searching.samplers import make_pruner, make_sampler
    from automl_img.searching.trial import Objective, enqueue_defaults
    from automl_img.study.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    objective = None
    fatal, interrupted = None, False
    try:
        architectures = spec.config.families(spec.plugins.load())
        study = optuna.load_study(
            study_name=spec.study_name,
            storage=open_storage(spec.options.storage),
            pruner=make_pruner(spec.options.pruner),
        )
        study.sampler = make_sampler(
            spec.options.sampler,
            spec.sampler_seed,
            completed=len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
        )
        if not study.trials:
            enqueue_defaults(study, spec.options, spec.config, architectures)
        objective = Objective(spec, architectures, emit)
        study.optimize(objective, n_trials=1, catch=(errors.TrialFailed,))
    except errors.AutomlImgError as exc:
        fatal = (type(exc).__name__, str(exc))
    except KeyboardInterrupt:
        interrupted = True
    return TrialReport(
        objective.last_number if objective else None, objective.unreadable if objective else [], fatal, interrupted
    )


def run_trial_here(spec: TrialSpec, listener: SearchListener, stop: threading.Event | None = None) -> TrialRun:
    """Run one trial in this process; Keras' global state (session, precision policy) is reset afterwards."""
    run = TrialRun(exit_code=0)
    try:
        run.take(run_one_trial(spec, lambda event: event.deliver(listener)))
    finally:
        from automl_img.tf_runtime import keras

        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")
    return run


def default_runner() -> TrialRunner:
    """The process runner, unless ``AUTOML_IMG_TRIAL_RUNNER=here`` asks for trials in the search's process."""
    name = os.environ.get(RUNNER_ENV, "process")
    runners: dict[str, TrialRunner] = {"process": run_trial_process, "here": run_trial_here}
    if name not in runners:
        raise errors.StudyError(f"{RUNNER_ENV}={name!r} is not a trial runner; use one of {', '.join(runners)}")
    return runners[name]


def run_trial_process(spec: TrialSpec, listener: SearchListener, stop: threading.Event | None = None) -> TrialRun:
    """Run one trial in a child, relaying its progress events to ``listener``; ``stop`` (another worker's
    Ctrl-C) interrupts it as Ctrl-C would."""
    context = _trial_context()
    events = context.Queue()
    child = context.Process(
        target=_child_main, args=(spec, events, dict(os.environ), os.getcwd()), name="automl-img-trial"
    )
    run = TrialRun()
    started = time.time()
    try:
        with _main_module_left_out(), _ctrl_c_held():
            child.start()  # the first start of a forkserver waits for its import of TensorFlow
        while True:
            try:
                _receive(events.get(timeout=0.2), run, listener)
            except queue.Empty:
                if not child.is_alive():
                    break
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt from None
                limit = spec.options.trial_timeout
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
            _receive(events.get_nowait(), run, listener)
        except (queue.Empty, EOFError, OSError):
            break
    run.exit_code = child.exitcode
    return run


def _trial_context() -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """A forkserver that has imported TensorFlow on Linux without a GPU driver, else a clean interpreter."""
    if sys.platform.startswith("linux") and not any(os.path.exists(file) for file in _GPU_DEVICE_FILES):
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["automl_img.searching.preload"])
        return context
    return multiprocessing.get_context("spawn")


_MAIN_SWAP = threading.Lock()  # --workers start trial processes from several threads


@contextlib.contextmanager
def _main_module_left_out() -> Iterator[None]:
    """Spawn re-runs the parent's main script in the child, so a script or notebook without an
    ``if __name__ == "__main__":`` guard would start its search again there. The child needs nothing from it
    (plugins defined there cross by value), so it is shown an empty ``__main__`` while it starts. One thread at a
    time: two interleaved swaps would leave the empty module in place of a notebook's own."""
    with _MAIN_SWAP:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


@contextlib.contextmanager
def _ctrl_c_held() -> Iterator[None]:
    """Ctrl-C waits until the child has started, then interrupts as usual (and the child is stopped as usual).
    Interrupted half-way, ``start`` left a child the search no longer knew: it printed a traceback when the
    search, exiting, removed the queue the child was still unpacking. (Blocking SIGINT in this thread does not
    hold it: the signal is taken by another thread and raised here all the same.)"""
    if threading.current_thread() is not threading.main_thread():  # Ctrl-C reaches the main thread only
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed and callable(previous):
        previous(signal.SIGINT, None)  # Python's own handler raises KeyboardInterrupt; a notebook's, its own


def _receive(message: ProgressEvent | TrialReport, run: TrialRun, listener: SearchListener) -> None:
    if isinstance(message, TrialReport):
        run.take(message)
    else:
        message.deliver(listener)


def _child_main(spec: TrialSpec, events, environment: dict[str, str], folder: str) -> None:
    _die_with_parent()
    _interrupt_on_sigterm()
    os.environ.clear()  # a forked child has the forkserver's, from when it started
    os.environ.update(environment)
    os.chdir(folder)
    if spec.device is not None:  # before TensorFlow loads: one GPU per worker, its memory taken as needed
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.device
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    report = TrialReport(interrupted=True)
    try:
        # TensorFlow's C++ runtime prints to file descriptor 2 past its log level (oneDNN notes, an "E0000" line
        # for uint8 ops): the study's log keeps it, the search's display shows the trial's progress only.
        with output_to(study_dir(spec.study_name) / TRIALS_LOG):
            report = run_one_trial(spec, _emitter(events))
    finally:
        events.put(report)
        events.close()
        events.join_thread()


_terminated = threading.Event()


def _interrupt_on_sigterm() -> None:
    """Ctrl-C reaches the whole process group; only the parent acts on it, then sends SIGTERM
    here once, which interrupts training like Ctrl-C would, so the trial is marked failed."""

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _terminated.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, interrupt)


def _emitter(events) -> Callable[[ProgressEvent], None]:
    """Progress goes to the parent; a SIGTERM whose KeyboardInterrupt was swallowed (raised inside a
    finaliser, say, where Python only prints it) interrupts at the next event, at the latest an epoch later."""

    def emit(event: ProgressEvent) -> None:
        if _terminated.is_set():
            raise KeyboardInterrupt
        events.put(event)

    return emit


def _die_with_parent() -> None:
    """End this child when the search process dies, even by SIGKILL: a thread waits on the pipe that only
    the search holds open (the forkserver, this child's real parent, outlives the search while children
    live). Linux also kills a spawned child with its direct parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    search = multiprocessing.parent_process()
    if search is None or not search.is_alive():  # it died before this child got here
        os._exit(1)

    def kill_when_the_search_dies() -> None:
        search.join()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill_when_the_search_dies, name="automl-img-search-watch", daemon=True).start()
