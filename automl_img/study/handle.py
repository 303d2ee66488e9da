"""One owner of everything stored about a study: storage and name, configuration, folder, data, trials, models."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from automl_img.atomic import atomic_write_text
from automl_img.errors import StudyError
from automl_img.study.artifacts import download_weights
from automl_img.study.config import StudyConfig, StudyData, open_data, study_dir
from automl_img.study.records import TrialRecord, ranked, trial_records
from automl_img.study.storage import default_storage_url, load_study, open_storage, redact

if TYPE_CHECKING:
    from automl_img.plugins import Registry

EXPORT_FOLDER = "export"
REPORT_FILE = "report.html"
SKIPPED_FILE = "skipped-files.csv"
TRIALS_LOG = "trials.log"  # what trial processes print (TensorFlow's C++ notes and warnings), kept off the display
# when a file was left out: the loader skipped it, or OpenCV could not read it
LISTING, DECODING = "listing", "decoding"


def trial_weights(number: int) -> str:
    """Where a trial keeps its best epoch's weights, relative to the study's folder."""
    return f"trials/{number}/best.weights.h5"


def stored_config(study: optuna.Study, wait: float = 0.0) -> StudyConfig:
    """The study's configuration; a study that another program made gets a clear message. ``wait``: seconds to
    give a search that has just created the study (another worker started at the same moment) to store it."""
    config = StudyConfig.of(study)
    give_up = time.monotonic() + wait
    while config is None and time.monotonic() < give_up:
        time.sleep(0.5)
        config = StudyConfig.of(study)  # user_attrs are read from the storage on each access
    if config is None:
        raise StudyError(
            f"study {study.study_name!r} was not made by automl-img search (no configuration stored); "
            "give another --study name"
        )
    return config


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str
    stage: str  #: LISTING or DECODING


@dataclass(frozen=True)
class TrialCounts:
    """Trials by state, surplus trials (never run) left out."""

    completed: int
    pruned: int
    failed: int
    running: int

    @property
    def finished(self) -> int:
        return self.completed + self.pruned


@dataclass
class StoredStudy:
    """A study made by ``automl-img search``, opened from its storage."""

    study: optuna.Study
    config: StudyConfig
    storage_url: str | None = None  # as the user gave it; None: the default storage

    @classmethod
    def open(cls, name: str | None = None, storage_url: str | None = None) -> StoredStudy:
        """The named study (or the storage's only one)."""
        study = load_study(open_storage(storage_url), name, storage_url)
        return cls(study, stored_config(study), storage_url)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def storage_shown(self) -> str:
        """The storage, password redacted, for messages."""
        return redact(self.storage_url) if self.storage_url else f"the default storage ({default_storage_url()})"

    @property
    def folder(self) -> Path:
        return study_dir(self.name)

    @property
    def export_folder(self) -> Path:
        return self.folder / EXPORT_FOLDER

    @property
    def larger_is_better(self) -> bool:
        return self.study.direction == StudyDirection.MAXIMIZE

    @property
    def skipped_file(self) -> Path:
        """Every file the study leaves out, with the reason: the complete list behind the one-line summaries."""
        return self.folder / SKIPPED_FILE

    def skipped(self) -> list[SkippedFile]:
        if not self.skipped_file.exists():
            return []
        with open(self.skipped_file, newline="", encoding="utf-8") as handle:
            return [SkippedFile(**row) for row in csv.DictReader(handle)]

    def record_skipped(self, listing: list[tuple[str, str]], unreadable: list[tuple[str, str]] | None) -> None:
        """Write the complete list; ``unreadable=None`` keeps the decoding failures recorded before."""
        if unreadable is None:
            decoding = [file for file in self.skipped() if file.stage == DECODING]
        else:
            decoding = [SkippedFile(path, reason, DECODING) for path, reason in unreadable]
        rows = [SkippedFile(path, reason, LISTING) for path, reason in listing] + decoding
        lines = io.StringIO()
        writer = csv.writer(lines)
        writer.writerow([f.name for f in fields(SkippedFile)])
        writer.writerows(astuple(row) for row in rows)
        atomic_write_text(self.skipped_file, lines.getvalue())

    def open_data(self, registry: Registry) -> StudyData:
        """The images the study was split from, refused when they are not the same files."""
        return open_data(
            self.name,
            registry.get("dataset", self.config.dataset),
            self.config.source,
            self.config.split_seed,
            expected_hash=self.config.split_hash,
            excluded=self.config.excluded,
        )

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[TrialRecord]:
        return trial_records(self.study, states)

    def counts(self) -> TrialCounts:
        return count_trials(self.trials())

    def best_trials(self, count: int) -> list[TrialRecord]:
        """The ``count`` best completed trials, best first; a clear message when there is none."""
        ranked = self._ranked()
        if not ranked:
            counts = self.counts()
            raise StudyError(
                f"study {self.name!r} has no completed trial yet ({counts.pruned} pruned, {counts.failed} failed); "
                "run `automl-img search` with the same data and --study to add trials, then export again"
            )
        return ranked[:count]

    def best_trial(self) -> TrialRecord | None:
        ranked = self._ranked()
        return ranked[0] if ranked else None

    def _ranked(self) -> list[TrialRecord]:
        return ranked(self.trials((TrialState.COMPLETE,)), self.larger_is_better)

    def weights_file(self, trial: TrialRecord) -> Path:
        """The trial's best weights on this machine, downloaded from the study's artifact store when it has
        them and this machine does not; a clear message when they are elsewhere."""
        if trial.weights is None:
            raise StudyError(f"trial #{trial.number} of study {self.name!r} kept no weights")
        weights = self.folder / trial.weights
        if not weights.exists() and trial.weights_artifact and self.config.artifacts:
            download_weights(self.config.artifacts, trial.weights_artifact, weights)
        if not weights.exists():
            host = trial.worker.host if trial.worker else "another machine"
            raise StudyError(
                f"the weights of trial #{trial.number} are not here ({weights}); it ran on {host}: run "
                f"the command there, or copy its studies/{self.name}/trials/{trial.number}/ folder here"
            )
        return weights


def count_trials(trials: list[TrialRecord]) -> TrialCounts:
    states = [t.state for t in trials]
    return TrialCounts(
        states.count(TrialState.COMPLETE),
        states.count(TrialState.PRUNED),
        states.count(TrialState.FAIL),
        states.count(TrialState.RUNNING),
    )
