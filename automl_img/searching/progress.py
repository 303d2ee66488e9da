"""What a search tells its caller as it goes: the listener, and the events a trial process sends it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from automl_img.study.config import StudyData
    from automl_img.study.handle import StoredStudy
    from automl_img.study.records import TrialRecord


class SearchListener:
    """Receives the search's progress; every method is optional."""

    def study_ready(self, study: StoredStudy, data: StudyData) -> None: ...

    def decode_progress(self, image_size: int, done: int, total: int, task: str = "decoding images") -> None: ...

    def trial_started(self, number: int, params: dict[str, Any], epochs: int, promoted_from: int | None) -> None: ...

    def epoch_done(self, number: int, epoch: int, value: float) -> None: ...

    def trial_finished(self, trial: TrialRecord) -> None: ...


@dataclass(frozen=True)
class DecodeProgress:
    image_size: int
    done: int
    total: int
    task: str = "decoding images"  # or "computing features": a pretrained backbone's, once per image

    def deliver(self, listener: SearchListener) -> None:
        listener.decode_progress(self.image_size, self.done, self.total, self.task)


@dataclass(frozen=True)
class TrialStarted:
    number: int
    params: dict[str, Any]
    epochs: int  # its schedule's length
    promoted_from: int | None = None  # the shorter trial whose configuration it trains for longer

    def deliver(self, listener: SearchListener) -> None:
        listener.trial_started(self.number, self.params, self.epochs, self.promoted_from)


@dataclass(frozen=True)
class EpochDone:
    number: int
    epoch: int
    value: float

    def deliver(self, listener: SearchListener) -> None:
        listener.epoch_done(self.number, self.epoch, self.value)


ProgressEvent = DecodeProgress | TrialStarted | EpochDone
