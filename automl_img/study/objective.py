"""One trial, as the trial process runs it: sample, decode (cached), build, train, record."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from automl_img.errors import DataError, PluginError, StudyError, TrialFailed
from automl_img.space import DefaultHyperParameters, Override, TrialHyperParameters, sample_training_params
from automl_img.study.config import StudyConfig, StudyData, study_dir

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Emit = Callable[..., None]  # emit(event_name, *args): progress for the search's listener


@dataclass(frozen=True)
class TrialSettings:
    """What a trial needs from the search's options (picklable: it crosses into the trial process)."""

    trials: int
    epochs: int
    patience: int
    objective: str
    overrides: dict[str, Override] = field(default_factory=dict)
    seed: int | None = None
    deadline: float | None = None  # time.time() after which no epoch starts
    trial_timeout: float | None = None
    command: str = ""


class Objective:
    """The function Optuna calls; a trial's own faults become TrialFailed, the study goes on."""

    def __init__(self, settings: TrialSettings, config: StudyConfig, data: StudyData, build: Callable[..., Any],
                 emit: Emit):
        self.settings, self.config, self.data, self.build, self.emit = settings, config, data, build, emit
        self.last_number: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        self.last_number = trial.number
        trial.set_user_attr("worker", worker_identity())
        if self._surplus(trial):
            trial.set_user_attr("surplus", True)
            raise TrialFailed(f"not run: the study's {self.settings.trials} trials were already taken by other workers")
        try:
            return self._run(trial)
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            raise

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Workers that asked for a trial at the same moment: the later numbers give way."""
        taken = trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        return sum(t.number < trial.number for t in taken) >= self.settings.trials

    def _run(self, trial: optuna.Trial) -> float:
        from automl_img import training  # TensorFlow loads here, in the trial process only

        settings = self.settings
        hp = TrialHyperParameters(trial, settings.overrides)
        params = sample_training_params(hp, self.config.image_sizes)
        decoded = self.data.cache.load(params.image_size, self.config.channels,
                                       lambda done, total: self.emit("decode_progress", params.image_size, done, total))
        self.emit("unreadable", self.data.unreadable_files(decoded))
        train_rows, val_rows = self.data.rows("train", decoded), self.data.rows("val", decoded)
        if len(train_rows) == 0 or len(val_rows) == 0:
            raise DataError("no readable images left in the train or val split; check the skipped files listed above")
        seed = (settings.seed or 0) + trial.number
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("command", settings.command)
        training.keras.utils.set_random_seed(seed)
        try:
            model = training.build_model(self.build, hp, params.image_size, self.config.channels,
                                         len(self.config.class_names), params.learning_rate)
            unused = hp.unused_overrides()
            if unused:
                raise StudyError(f"parameter(s) {', '.join(unused)} are not in the search space; "
                                 f"known: {', '.join(sorted(hp.values))}")
            self.emit("trial_started", trial.number, dict(trial.params))
            limits = training.Limits(settings.epochs, settings.patience, settings.deadline, settings.trial_timeout)
            result = training.train(model, decoded.images, self.data.labels, train_rows, val_rows, params, limits,
                                    settings.objective, _Reporter(trial, self.emit), seed=seed,
                                    class_weight=self.config.class_weights(self.data.labels, train_rows))
            trial.set_user_attr("history", result.history)
            trial.set_user_attr("stopped_by", result.stopped_by)
            trial.set_user_attr("seconds", round(result.seconds, 2))
            trial.set_user_attr("resident_mb", resident_mb())
            if result.pruned:
                raise optuna.TrialPruned(f"pruned after epoch {result.epochs_run}")
            weights = f"trials/{trial.number}/best.weights.h5"  # relative to the study's folder
            training.save_weights(model, study_dir(trial.study.study_name) / weights)
        except (DataError, StudyError, optuna.TrialPruned, TrialFailed):
            raise
        except PluginError as exc:
            raise TrialFailed(str(exc)) from exc
        except Exception as exc:  # a plugin's bug, an out-of-memory batch size...: this trial only
            raise TrialFailed(f"{type(exc).__name__}: {exc}") from exc
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("val_scores", result.best_scores)
        trial.set_user_attr("weights", weights)
        return float(result.best_value)


class _Reporter:
    """Reports each epoch to the pruner and the listener."""

    def __init__(self, trial: optuna.Trial, emit: Emit):
        self.trial, self.emit = trial, emit

    def report(self, value: float, step: int) -> None:
        self.trial.report(value, step)
        self.emit("epoch_done", self.trial.number, step, value)

    def should_prune(self) -> bool:
        return self.trial.should_prune()


def enqueue_defaults(study: optuna.Study, settings: TrialSettings, config: StudyConfig, build: Callable[..., Any]) -> None:
    """A new study's first trial is every parameter's default: for the built-ins, a configuration that did
    well on our development data (README, "The search space").

    The search then starts from a known, strong model (exportable early) and improves on it.
    """
    from automl_img import training

    hp = DefaultHyperParameters(settings.overrides)
    params = sample_training_params(hp, config.image_sizes)
    try:  # building declares the architecture's parameters, so their defaults are fixed too
        build(hp, (params.image_size, params.image_size, config.channels), len(config.class_names))
    except Exception:  # noqa: BLE001 - a plugin's bug: the trial meets it again and records the reason
        pass
    finally:
        training.keras.backend.clear_session()
    study.enqueue_trial(hp.values, skip_if_exists=True)


def worker_identity() -> dict[str, Any]:
    """Where a trial runs: its host, its trial process (pid) and the search that started it (search_pid)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": process_start(os.getpid()),
            "search_pid": os.getppid()}


def process_start(pid: int) -> str | None:
    """The process's start time since boot (tells a reused pid apart); None without /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


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
