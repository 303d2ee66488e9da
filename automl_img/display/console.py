"""Everything the CLI prints: live search progress, summaries and tables (rich), or JSON lines."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from automl_img.data.audit import KIND_TITLES
from automl_img.data.imageset import all_numbered
from automl_img.models.metrics import OBJECTIVES
from automl_img.outputs.audit_report import AUDIT_FILE, AuditResult
from automl_img.outputs.export import ExportResult, members_text
from automl_img.searching.progress import SearchListener
from automl_img.searching.run import SearchSummary
from automl_img.study.config import StudyConfig, StudyData, describe_skips, imbalance
from automl_img.study.handle import StoredStudy
from automl_img.study.records import TrialRecord, completed_value, ranked

# soft_wrap and a wide page when piped: a long line or table row stays one line (greppable,
# copy-pasteable commands) instead of being folded at 80 columns.
_PIPED_WIDTH = None if sys.stdout.isatty() else 240
console = Console(highlight=False, soft_wrap=True, width=_PIPED_WIDTH)
errors = Console(stderr=True, highlight=False, soft_wrap=True, width=_PIPED_WIDTH)


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))  # noqa: RUF046 - round() of a numpy float is a float before NumPy 2
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class _Tally:
    """What every display keeps count of: finished trials, pruned ones, the best so far, the ETA."""

    def __init__(self, trials: int, timeout: float | None = None):
        self.trials, self.timeout = trials, timeout
        self.objective = "value"
        self.larger_is_better = True
        self.started = time.time()
        self.finished_before = self.finished_here = self.pruned = 0
        self.best: TrialRecord | None = None

    def ready(self, study: StoredStudy) -> None:
        self.objective, self.finished_before = study.config.objective, study.counts().finished
        self.larger_is_better = OBJECTIVES[study.config.objective]
        self.best = study.best_trial()

    def add(self, trial: TrialRecord) -> None:
        self.finished_here += trial.finished
        self.pruned += trial.state == TrialState.PRUNED
        self.best = next(iter(ranked([trial] + ([self.best] if self.best else []), self.larger_is_better)), self.best)

    @property
    def done(self) -> int:
        return self.finished_before + self.finished_here

    @property
    def eta(self) -> float | None:
        """Seconds until the trials asked for are done, or until ``--timeout`` if that comes first."""
        remaining = max(self.trials - self.done, 0)
        if not self.finished_here or not remaining:
            return None
        elapsed = time.time() - self.started
        by_trials = elapsed / self.finished_here * remaining
        return by_trials if self.timeout is None else max(min(by_trials, self.timeout - elapsed), 0.0)

    def best_text(self) -> str:
        return f"best #{self.best.number} {completed_value(self.best):.4f}" if self.best else "no best yet"


class QuietDisplay(SearchListener):
    """``--quiet``: nothing while searching; the summary at the end."""

    def __init__(self, trials: int, timeout: float | None = None):
        self.tally = _Tally(trials, timeout)

    def study_ready(self, study: StoredStudy, data: StudyData) -> None:
        self.tally.ready(study)

    def trial_finished(self, trial: TrialRecord) -> None:
        self.tally.add(trial)

    def summary(self, summary: SearchSummary) -> None:
        _print_summary(summary)


class LiveDisplay(QuietDisplay):
    """The terminal: the data, a bar for the first decode, one live line for the trial in progress and a
    summary line per finished trial. Piped to a file, the live line becomes a line per epoch."""

    def __init__(self, trials: int, timeout: float | None = None, workers: int = 1):
        super().__init__(trials, timeout)
        self.epochs: dict[int, int] = {}  # of the trials in progress
        self.decoding: Progress | None = None
        self.running: Progress | None = None  # the live line of the trial in progress, on a terminal
        self.live = console.is_terminal and workers == 1  # several trials at once: a line per epoch, each named
        self.noted: set[str] = set()  # compile-only parameters already named

    def study_ready(self, study: StoredStudy, data: StudyData) -> None:
        super().study_ready(study, data)
        for line in study_lines(study, data, self.tally.finished_before):
            console.print(line)

    def decode_progress(self, image_size: int, done: int, total: int, task: str = "decoding images") -> None:
        if self.decoding is None:
            self.decoding = Progress(
                TextColumn(f"{task} at {image_size} px"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
            )
            self.decoding.start()
            self._task = self.decoding.add_task("decode", total=total)
        self.decoding.update(self._task, completed=done)
        if done >= total:
            self.decoding.stop()
            self.decoding = None

    def trial_started(self, number: int, params: dict[str, Any], epochs: int, promoted_from: int | None) -> None:
        self.epochs[number] = epochs
        console.print(f"[dim]{started_line(number, params, epochs, promoted_from)}[/]")
        if self.live:
            self.running = Progress(TextColumn("[dim]{task.description}"), console=console, transient=True)
            self.running.start()
            self._running_task = self.running.add_task(f"  #{number} epoch 0/{epochs}", total=None)

    def epoch_done(self, number: int, epoch: int, value: float) -> None:
        line = f"  #{number} epoch {epoch}/{self.epochs.get(number, '?')}: val {self.tally.objective} {value:.4f}"
        if self.running is not None:
            self.running.update(self._running_task, description=f"{line} | {self.tally.best_text()}")
        else:
            console.print(f"[dim]{line}[/]")

    def _stop_running(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    def trial_finished(self, trial: TrialRecord) -> None:
        self._stop_running()
        super().trial_finished(trial)
        console.print(trial_line(trial, self.tally))
        if trial.not_searched and set(trial.not_searched) - self.noted:  # said once per parameter
            self.noted |= set(trial.not_searched)
            console.print(f"  {not_searched_note(trial.not_searched)}")

    def summary(self, summary: SearchSummary) -> None:
        self._stop_running()  # interrupted mid-trial
        super().summary(summary)


class JsonLinesDisplay(QuietDisplay):
    """``--json``: one JSON object per event, for scripts."""

    def study_ready(self, study: StoredStudy, data: StudyData) -> None:
        super().study_ready(study, data)
        _json_line(
            "study",
            study=study.name,
            storage=study.storage_shown,
            images=len(data.split.image_set),
            classes=list(data.class_names),
            split=data.split.counts(),
            finished_trials=self.tally.finished_before,
            skipped_files=str(study.skipped_file),
        )

    def trial_started(self, number: int, params: dict[str, Any], epochs: int, promoted_from: int | None) -> None:
        _json_line("trial_start", trial=number, params=params, epochs=epochs, promoted_from=promoted_from)

    def epoch_done(self, number: int, epoch: int, value: float) -> None:
        _json_line("epoch", trial=number, epoch=epoch, **{self.tally.objective: value})

    def trial_finished(self, trial: TrialRecord) -> None:
        super().trial_finished(trial)
        _json_line(
            "trial_end",
            trial=trial.number,
            state=trial.state.name,
            value=trial.value,
            reason=trial.fail_reason,
            not_searched=trial.not_searched,
            finished=self.tally.done,
            of=self.tally.trials,
            eta_seconds=self.tally.eta,
        )

    def summary(self, summary: SearchSummary) -> None:
        best, counts = summary.best_trial, summary.counts
        _json_line(
            "summary",
            study=summary.study_name,
            completed=counts.completed,
            pruned=counts.pruned,
            failed=counts.failed,
            stopped_because=summary.stopped_because,
            seconds=round(summary.seconds, 1),
            best_trial=best.number if best else None,
            best_value=best.value if best else None,
            best_params=best.params if best else None,
            unreadable=summary.unreadable,
        )


def _json_line(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    sys.stdout.flush()


def _print_summary(summary: SearchSummary) -> None:
    console.print()
    next_step = f"automl-img export-best --study {summary.study_name}" + (
        f" --storage '{summary.storage}'" if summary.storage else ""
    )
    for line in summary_lines(summary, "command", next_step):
        console.print(line)


def study_lines(study: StoredStudy, data: StudyData, finished_before: int) -> list[str]:
    """What a search says first: the study, the data and its split, and anything left out (rich markup)."""
    config, counts = study.config, data.split.counts()
    lines = [
        f"study [bold]{study.name}[/] in {study.storage_shown}: {finished_before} finished trial(s) so far",
        f"data: {len(data.split.image_set)} images, {len(data.class_names)} classes; "
        f"split train {counts['train']} / val {counts['val']} / test {counts['test']}; "
        f"image sizes searched: {_sizes_text(config)}, {'grayscale' if config.channels == 1 else 'RGB'}",
    ]
    if config.ordinal:
        lines.append(
            f"classes are grades, lowest first: {', '.join(config.class_names)}; ranked by val {config.objective}"
        )
    elif all_numbered(config.class_names):
        lines.append(
            "the classes are numbered: if they are ordered grades, --ordinal ranks trials by how far they miss, "
            "searches ordinal training targets and gives sets of neighbouring grades (a new study)"
        )
    if config.balance_classes:
        skew = imbalance(data.labels, data.split.indices("train"))
        lines.append(
            f"classes are unbalanced (largest/smallest {skew:.1f}): the loss weights them by inverse "
            "frequency (--class-weights off to stop)"
        )
    if data.loader_skipped:
        lines.append(
            f"[yellow]skipped {escape(describe_skips(list(data.loader_skipped)))} "
            f"(every one listed in {escape(str(study.skipped_file))})[/]"
        )
    copies = data.exact_copies
    if copies and (copies.across_parts or copies.across_classes):
        lines.append(
            f"[yellow]{copies.across_parts} file(s) have an identical copy in another part of the split and "
            f"{copies.across_classes} in another class: `automl-img audit` finds them and near copies, and "
            "writes a list to leave out (--exclude)[/]"
        )
    if data.not_in_split:
        lines.append(
            f"[yellow]{data.not_in_split} file(s) were added after this study fixed its split and "
            "are not used; start a new study (--study NAME) to use them[/]"
        )
    return lines


def started_line(number: int, params: dict[str, Any], epochs: int, promoted_from: int | None) -> str:
    """A trial starting: its parameters, or whose configuration it trains for longer."""
    longer = f"#{promoted_from}'s configuration for {epochs} epochs" if promoted_from is not None else ""
    return f"trial #{number}: {longer or format_params(params) + f', {epochs} epochs'}"


def export_lines(result: ExportResult) -> list[str]:
    """What export-best wrote and how its bundle scored on the test split (rich markup)."""
    bundle, test = result.bundle, result.bundle.test
    assert test is not None  # export_best tests every bundle it writes
    return [
        f"exported {'the ' * (len(bundle.members) > 1)}{members_text(bundle)} of study {bundle.study} to "
        f"{result.folder}" + (" (refit on train+val)" if bundle.refit else ""),
        f"test split: {test.images} images, accuracy [bold]{test.accuracy:.4f}[/], "
        f"balanced accuracy {test.balanced_accuracy:.4f}, macro F1 {test.macro_f1:.4f}"
        + (f", QWK {test.qwk:.4f}, MAE {test.mae:.4f} grades" if bundle.ordinal else ""),
        *(bundle.calibration.describe() if bundle.calibration else []),
    ]


def trial_line(trial: TrialRecord, tally: _Tally) -> str:
    """One finished trial, and where the search stands (rich markup)."""
    if trial.state == TrialState.COMPLETE:
        outcome = f"[green]complete[/] val {tally.objective} {trial.value:.4f} (best epoch {trial.best_epoch})"
    elif trial.state == TrialState.PRUNED:
        outcome = f"[yellow]pruned[/] after epoch {len(trial.intermediate_values)}"
    else:
        outcome = f"[red]failed[/]: {escape(trial.fail_reason or 'see the log')}"  # "pip install 'x[extra]'"
    return (
        f"trial #{trial.number} {outcome}, {format_seconds(trial.seconds or 0)}"
        f" | {tally.done}/{tally.trials} finished ({tally.pruned} pruned this run)"
        + (f", {tally.best_text()}" if tally.best else "")
        + (f", ETA {format_seconds(tally.eta)}" if tally.eta is not None else "")
    )


def not_searched_note(names: list[str]) -> str:
    return (
        f"not searched: {', '.join(names)}, which the architecture declares for its own compile; automl-img "
        "trains it with its recipe (docs/PLUGINS.md)"
    )


def summary_lines(summary: SearchSummary, again: str, next_step: str) -> list[str]:
    """How a search ended (rich markup). ``again``: what resumes it ("command", "call"); ``next_step``: what exports."""
    best, counts = summary.best_trial, summary.counts
    lines = [
        f"search ended: {summary.stopped_because} ({format_seconds(summary.seconds)})",
        f"trials: {counts.completed} completed, {counts.pruned} pruned, {counts.failed} failed"
        + (f", {counts.running} running elsewhere" if counts.running else ""),
    ]
    if summary.unreadable:
        lines.append(
            f"[yellow]skipped unreadable {escape(describe_skips(summary.unreadable))} "
            f"(every one listed in {escape(str(summary.skipped_file))})[/]"
        )
    if summary.interrupted:
        lines.append(
            f"saved: every finished trial of study {summary.study_name}; the trial in progress was "
            f"marked failed. Run the same {again} again to resume."
        )
    if best is None:
        return lines + [f"no completed trial yet; run the same {again} again to continue the study"]
    return lines + [
        f"best: trial #{best.number}, val {summary.objective} [bold]{best.value:.4f}[/]",
        f"      {format_params(best.params)}",
        f"next: {next_step}",
    ]


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)


def _sizes_text(config: StudyConfig) -> str:
    """``16, 24, 28 px``; per architecture where a study searches several with different sizes."""
    sizes = config.family_image_sizes or {"": config.image_sizes}
    return "; ".join(f"{name + ' ' if name else ''}{', '.join(map(str, found))} px" for name, found in sizes.items())


def audit_lines(result: AuditResult, shown: int = 3) -> list[str]:
    """What the audit found, most serious first, a few examples of each (rich markup; names and paths escaped, so
    a file called ``x[1].png`` or a message naming ``automl-img[pretrained]`` prints as it is)."""
    report = result.report
    counts = report.class_counts
    parts = f" ({', '.join(f'{part} {n}' for part, n in report.part_counts.items())})" if report.part_counts else ""
    lines = [
        f"audited {report.images} images in {len(counts)} classes{escape(parts)} in {format_seconds(report.seconds)}",
        escape(f"classes: {', '.join(f'{name} {n}' for name, n in counts.items())}")
        + (f" (largest/smallest {max(counts.values()) / min(counts.values()):.1f})" if min(counts.values()) else ""),
    ]
    for kind, title in KIND_TITLES.items():
        pairs = report.of_kind(kind)
        colour = "red" if kind != "duplicate" else "yellow"
        if pairs:
            lines.append(f"[{colour}]{len(pairs)} pair(s) of {title}[/], e.g.:")
            lines += [
                escape(
                    f"  {p.first} ({p.first_class}{', ' + p.first_part if p.first_part else ''}) ~ {p.second} "
                    f"({p.second_class}{', ' + p.second_part if p.second_part else ''}), {p.apart}"
                )
                for p in pairs[:shown]
            ]
    if report.label_suspects:
        lines.append(
            f"[yellow]{len(report.label_suspects)} likely label error(s)[/] ({escape(report.label_check)}), e.g.:"
        )
        lines += [
            escape(
                f"  {s.path}: labelled {s.given} ({s.given_probability:.2f}), looks like {s.likely} "
                f"({s.likely_probability:.2f})"
            )
            for s in report.label_suspects[:shown]
        ]
    elif report.label_check.startswith("not run"):
        lines.append(escape(f"labels {report.label_check}"))
    if report.oddities:
        lines.append(f"[yellow]{len(report.oddities)} odd image(s)[/], e.g.:")
        lines += [escape(f"  {o.path}: {o.reason}") for o in report.oddities[:shown]]
    if report.unreadable:
        lines.append(f"[yellow]unreadable or skipped: {escape(describe_skips(list(report.unreadable)))}[/]")
    if not (report.pairs or report.oddities or report.unreadable or report.label_suspects):
        lines.append("[green]no copies, label conflicts, leaks, suspect labels, odd or unreadable images found[/]")
    lines.append(escape(f"everything in {result.folder / AUDIT_FILE}; to look at: {result.page}"))
    excluded = report.exclusions()
    if excluded:
        data = result.source or "DATA_DIR"
        lines.append(
            escape(
                f"{len(excluded)} file(s) to leave out are listed in {result.exclusions_file}; edit it, then: "
                f"automl-img search {data} --exclude {result.exclusions_file}"
            )
        )
    return lines
