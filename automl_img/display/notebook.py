"""Search progress in Jupyter and Colab: one output, redrawn in place (no terminal escape codes, no widgets)."""

from __future__ import annotations

import html
import sys
import time
from typing import Any

from rich.text import Text

from automl_img.display.console import QuietDisplay, started_line, study_lines, summary_lines, trial_line
from automl_img.searching.run import SearchSummary
from automl_img.study.config import StudyData
from automl_img.study.handle import StoredStudy
from automl_img.study.records import TrialRecord

FINISHED_SHOWN = 10  # the latest finished trials stay on screen; earlier ones are counted
_REDRAW_SECONDS = 0.25  # decode progress can arrive hundreds of times a second


def in_notebook() -> bool:
    """True inside a Jupyter (or Colab, VS Code...) kernel, where a terminal's live line would print garbage."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def plain(markup: str) -> str:
    """A line of the console's rich markup as plain text."""
    return Text.from_markup(markup).plain


class NotebookDisplay(QuietDisplay):
    """The search's progress as one notebook output: the study and data, a bar of finished trials, the trial in
    progress (epoch k of n), the latest finished trials, and at the end the summary."""

    def __init__(self, trials: int, timeout: float | None = None, workers: int = 1):
        super().__init__(trials, timeout)
        from IPython.display import display

        self.header: list[str] = []
        self.finished: list[str] = []
        self.current: dict[int | str, str] = {}  # a line per trial in progress (several with workers), and decoding
        self.ending: list[str] = []
        self.epochs: dict[int, int] = {}
        self.started: dict[int, str] = {}
        self._drawn_at = 0.0
        self._handle = display(self._bundle(), raw=True, display_id=True)

    def study_ready(self, study: StoredStudy, data: StudyData) -> None:
        super().study_ready(study, data)
        self.header = [plain(line) for line in study_lines(study, data, self.tally.finished_before)]
        self._draw()

    def decode_progress(self, image_size: int, done: int, total: int, task: str = "decoding images") -> None:
        self.current["decode"] = f"{task} at {image_size} px: {done}/{total}"
        if done >= total:
            del self.current["decode"]
        self._draw(force=done >= total)

    def trial_started(self, number: int, params: dict[str, Any], epochs: int, promoted_from: int | None) -> None:
        self.epochs[number] = epochs
        self.started[number] = started_line(number, params, epochs, promoted_from)
        self.current[number] = f"{self.started[number]} | epoch 0/{epochs}"
        self._draw(force=True)

    def epoch_done(self, number: int, epoch: int, value: float) -> None:
        self.current[number] = (
            f"{self.started[number]} | epoch {epoch}/{self.epochs[number]}: "
            f"val {self.tally.objective} {value:.4f} | {self.tally.best_text()}"
        )
        self._draw(force=True)

    def trial_finished(self, trial: TrialRecord) -> None:
        super().trial_finished(trial)
        self.finished.append(plain(trial_line(trial, self.tally)))
        self.current.pop(trial.number, None)
        self._draw(force=True)

    def summary(self, summary: SearchSummary) -> None:
        self.current = {}
        self.ending = [plain(line) for line in summary_lines(summary, "call", "result.export_best()")]
        self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        if force or time.monotonic() - self._drawn_at >= _REDRAW_SECONDS:
            self._drawn_at = time.monotonic()
            self._handle.update(self._bundle(), raw=True)

    def _lines(self) -> list[str]:
        earlier = len(self.finished) - FINISHED_SHOWN
        return (
            self.header
            + ([f"... {earlier} earlier trial(s)"] if earlier > 0 else [])
            + self.finished[-FINISHED_SHOWN:]
            + list(self.current.values())
            + self.ending
        )

    def _bundle(self) -> dict[str, str]:
        tally = self.tally
        count = f"{tally.done}/{tally.trials} trials finished" + (f", {tally.best_text()}" if tally.best else "")
        rows = "".join(f"<div>{html.escape(line)}</div>" for line in self._lines())
        return {
            "text/plain": "\n".join([count, *self._lines()]),
            "text/html": f"<div style='font-family:monospace;font-size:12px;white-space:pre-wrap'><div>"
            f"<progress value='{tally.done}' max='{tally.trials}' style='width:16em'></progress> "
            f"{html.escape(count)}</div>{rows}</div>",
        }
