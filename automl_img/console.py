"""Everything the CLI prints: live search progress, summaries and tables (rich), or JSON lines."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from automl_img.metrics import OBJECTIVES
from automl_img.study.config import StudyConfig, StudyData, describe_skips, imbalance
from automl_img.study.search import SearchListener, SearchSummary

# soft_wrap and a wide page when piped: a long line or table row stays one line (greppable,
# copy-pasteable commands) instead of being folded at 80 columns.
_PIPED_WIDTH = None if sys.stdout.isatty() else 240
console = Console(highlight=False, soft_wrap=True, width=_PIPED_WIDTH)
errors = Console(stderr=True, highlight=False, soft_wrap=True, width=_PIPED_WIDTH)


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class SearchDisplay(SearchListener):
    """Live progress: the data, a bar for the first decode, a line per epoch and per trial."""

    def __init__(self, trials: int, mode: str = "normal"):
        self.trials, self.mode = trials, mode
        self.objective = "value"
        self.started = time.time()
        self.finished_here = 0
        self.finished_before = 0
        self.decoding: Progress | None = None
        self.pruned = 0
        self.best: tuple[int, float] | None = None  # (trial number, value) of the best so far
        self.larger_is_better = True

    def _emit(self, event: str, **fields: Any) -> None:
        sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
        sys.stdout.flush()

    def study_ready(self, study_name: str, storage: str, data: StudyData, config: StudyConfig, done: int,
                    best: FrozenTrial | None = None) -> None:
        self.objective, self.finished_before = config.objective, done
        self.larger_is_better = OBJECTIVES[config.objective]
        self.best = (best.number, best.value) if best is not None else None
        counts = data.split.counts()
        if self.mode == "jsonl":
            return self._emit("study", study=study_name, storage=storage, images=len(data.split.image_set),
                              classes=list(data.class_names), split=counts, finished_trials=done)
        if self.mode == "quiet":
            return
        console.print(f"study [bold]{study_name}[/] in {storage}: {done} finished trial(s) so far")
        console.print(f"data: {len(data.split.image_set)} images, {len(data.class_names)} classes; "
                      f"split train {counts['train']} / val {counts['val']} / test {counts['test']}; "
                      f"image sizes searched: {', '.join(map(str, config.image_sizes))} px, "
                      f"{'grayscale' if config.channels == 1 else 'RGB'}")
        if config.balance_classes:
            skew = imbalance(data.labels, data.split.indices("train"))
            console.print(f"classes are unbalanced (largest/smallest {skew:.1f}): the loss weights them by inverse "
                          "frequency (--class-weights off to stop)")
        if data.loader_skipped:
            console.print(f"[yellow]skipped {describe_skips(list(data.loader_skipped))}[/]")
        if data.not_in_split:
            console.print(f"[yellow]{data.not_in_split} file(s) were added after this study fixed its split and "
                          "are not used; start a new study (--study NAME) to use them[/]")

    def decode_progress(self, image_size: int, done: int, total: int) -> None:
        if self.mode != "normal":
            return
        if self.decoding is None:
            self.decoding = Progress(TextColumn(f"decoding images at {image_size} px"), BarColumn(),
                                     MofNCompleteColumn(), TimeRemainingColumn(), console=console)
            self.decoding.start()
            self._task = self.decoding.add_task("decode", total=total)
        self.decoding.update(self._task, completed=done)
        if done >= total:
            self.decoding.stop()
            self.decoding = None

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        if self.mode == "jsonl":
            return self._emit("trial_start", trial=number, params=params)
        if self.mode == "normal":
            console.print(f"[dim]trial #{number}: {format_params(params)}[/]")

    def epoch_done(self, number: int, epoch: int, value: float) -> None:
        if self.mode == "jsonl":
            return self._emit("epoch", trial=number, epoch=epoch, **{self.objective: value})
        if self.mode == "normal":
            console.print(f"[dim]  #{number} epoch {epoch}: val {self.objective} {value:.4f}[/]")

    def trial_finished(self, trial: FrozenTrial) -> None:
        self.finished_here += trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
        self.pruned += trial.state == TrialState.PRUNED
        if trial.state == TrialState.COMPLETE:
            value, best = trial.value, self.best[1] if self.best else None
            if best is None or (value > best if self.larger_is_better else value < best):
                self.best = (trial.number, value)
        done = self.finished_before + self.finished_here
        elapsed = time.time() - self.started
        remaining = max(self.trials - done, 0)
        eta = elapsed / self.finished_here * remaining if self.finished_here else None
        if self.mode == "jsonl":
            return self._emit("trial_end", trial=trial.number, state=trial.state.name, value=trial.value,
                              reason=trial.user_attrs.get("fail_reason"), finished=done, of=self.trials,
                              eta_seconds=eta)
        if self.mode == "quiet":
            return
        if trial.state == TrialState.COMPLETE:
            outcome = f"[green]complete[/] val {self.objective} {trial.value:.4f} (best epoch {trial.user_attrs.get('best_epoch')})"
        elif trial.state == TrialState.PRUNED:
            outcome = f"[yellow]pruned[/] after epoch {len(trial.intermediate_values)}"
        else:
            outcome = f"[red]failed[/]: {trial.user_attrs.get('fail_reason', 'see the log')}"
        console.print(f"trial #{trial.number} {outcome}, {format_seconds(trial.user_attrs.get('seconds', 0))}"
                      f" | {done}/{self.trials} finished ({self.pruned} pruned this run)"
                      + (f", best #{self.best[0]} {self.best[1]:.4f}" if self.best else "")
                      + (f", ETA {format_seconds(eta)}" if eta is not None and remaining else ""))


def print_search_summary(summary: SearchSummary, mode: str = "normal") -> None:
    best = summary.best_trial
    if mode == "jsonl":
        sys.stdout.write(json.dumps({
            "event": "summary", "study": summary.study_name, "completed": summary.completed,
            "pruned": summary.pruned, "failed": summary.failed, "stopped_because": summary.stopped_because,
            "seconds": round(summary.seconds, 1), "best_trial": best.number if best else None,
            "best_value": best.value if best else None, "best_params": best.params if best else None,
            "unreadable": summary.unreadable,
        }) + "\n")
        return
    console.print(f"\nsearch ended: {summary.stopped_because} ({format_seconds(summary.seconds)})")
    console.print(f"trials: {summary.completed} completed, {summary.pruned} pruned, {summary.failed} failed"
                  + (f", {summary.running} running elsewhere" if summary.running else ""))
    if summary.unreadable:
        console.print(f"[yellow]skipped unreadable {describe_skips(summary.unreadable)}[/]")
    if summary.interrupted:
        console.print(f"saved: every finished trial of study {summary.study_name}; the trial in progress was "
                      "marked failed. Run the same command again to resume.")
    if best is None:
        console.print("no completed trial yet; run the same command again to continue the study")
        return
    console.print(f"best: trial #{best.number}, val {summary.objective} [bold]{best.value:.4f}[/]")
    console.print(f"      {format_params(best.params)}")
    console.print(f"next: automl-img export-best --study {summary.study_name}"
                  + (f" --storage '{summary.storage}'" if summary.storage else ""))


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)
