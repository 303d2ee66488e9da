"""report: one self-contained HTML page about a study, with its pictures inlined (no JavaScript)."""

from __future__ import annotations

import base64
import html
import io
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from automl_img.display.overview import SIZE_COLUMNS, TRIAL_COLUMNS, importances, size_rows, trial_rows
from automl_img.models import families
from automl_img.models.metrics import TestReport
from automl_img.outputs.bundle import BUNDLE_FILE, BundleManifest, read_test_predictions
from automl_img.outputs.calibration import Calibration
from automl_img.plugins import Registry
from automl_img.study.handle import REPORT_FILE, StoredStudy, TrialCounts
from automl_img.study.records import TrialRecord, completed_value, ranked
from automl_img.study.storage import redact

EXPLAINED_MISTAKES, EXPLAINED_PER_CLASS, EXPLAINED_SHOWN = 6, 2, 24  # the report's occlusion overlays
MISCLASSIFIED_SHOWN = 24
PARAMETER_PLOTS_MIN_TRIALS = 5  # parallel coordinates and slices of fewer completed trials are noise


def write_report(
    registry: Registry, study_name: str | None = None, storage_url: str | None = None, out: Path | None = None
) -> Path:
    """Write the report; exports the best trials first when the bundle is missing or stale."""
    from automl_img.outputs.export import export_best

    stored = StoredStudy.open(study_name, storage_url)
    counts = stored.counts()
    bundle_dir = stored.export_folder
    bundle = best = None
    if counts.completed:
        best = stored.best_trial()
        averaged = (
            [m.trial for m in BundleManifest.read(bundle_dir).members] if (bundle_dir / BUNDLE_FILE).exists() else []
        )
        if not averaged or averaged != [t.number for t in stored.best_trials(len(averaged))]:
            export_best(registry, stored.name, storage_url, bundle_dir)
        bundle = BundleManifest.read(bundle_dir)
    import matplotlib

    matplotlib.use("Agg")
    sections = [_header(stored, counts, best)]
    sections += [_figure(title, draw) for title, draw in _search_figures(stored.study)]
    if bundle is not None:
        assert best is not None and bundle.test is not None  # the study has a completed trial; export tested it
        sections.append(_figure(f"Learning curves of the best trial (#{best.number})", lambda: _curves(best)))
        sections.append(_test_section(bundle.test, bundle.ordinal))
        sections.append(_figure("Confusion matrix on the test split", lambda: _confusion(bundle)))
        sections.append(reliability_section(bundle))
        sections.append(_figure("Misclassified test images", lambda: _misclassified(bundle_dir)))
        sections.append(
            _figure("Where the model looked (occlusion on test images)", lambda: _explained(bundle_dir, registry))
        )
    sections.append(_trials_table(stored))
    page = html_page(f"automl-img: {stored.name}", "\n".join(sections))
    target = Path(out) if out else stored.folder / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def _header(stored: StoredStudy, counts: TrialCounts, best: TrialRecord | None) -> str:
    config = stored.config
    best_text = f"trial #{best.number}, val {config.objective} {best.value:.4f}" if best is not None else "none yet"
    facts = [
        ("data", f"{config.source or config.dataset} ({len(config.class_names)} classes)"),
        ("architecture", config.architecture),
        *_families(stored),
        ("objective", f"val {config.objective}"),
        ("trials", f"{counts.completed} completed, {counts.pruned} pruned, {counts.failed} failed"),
        ("best", best_text),
        ("storage", redact(stored.storage_url) if stored.storage_url else "the default SQLite storage"),
    ]
    rows = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return f"<h1>Study {html.escape(stored.name)}</h1><table class='facts'>{rows}</table>"


def _families(stored: StoredStudy) -> list[tuple[str, str]]:
    """In a study of several architectures: each family's best completed trial, and how far behind the winner."""
    names = families.names(stored.config.architecture)
    if len(names) == 1:
        return []
    completed = stored.trials((TrialState.COMPLETE,))
    best = {
        name: next(
            iter(
                ranked([t for t in completed if t.params.get(families.FAMILY_PARAM) == name], stored.larger_is_better)
            ),
            None,
        )
        for name in names
    }
    leader = next(iter(ranked([t for t in best.values() if t is not None], stored.larger_is_better)), None)
    winner = completed_value(leader) if leader is not None else None
    rows = []
    for name in names:
        trial = best[name]
        count = sum(t.params.get(families.FAMILY_PARAM) == name for t in completed)
        if trial is None:
            rows.append((name, "no completed trial"))
            continue
        assert winner is not None  # this family's best is ranked
        behind = (
            "the best family"
            if trial.value == winner
            else f"{abs(winner - completed_value(trial)):.4f} behind the best"
        )
        rows.append(
            (
                name,
                f"best trial #{trial.number}, val {stored.config.objective} {trial.value:.4f} "
                f"({behind}; {count} completed trial{'s' * (count != 1)})",
            )
        )
    return rows


def _search_figures(study: optuna.Study) -> list[tuple[str, Callable]]:
    from optuna.visualization import matplotlib as optuna_plots

    found = importances(study)
    top = list(found)[:6] if isinstance(found, dict) else None
    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def when_enough(draw: Callable) -> Callable:
        if completed >= PARAMETER_PLOTS_MIN_TRIALS:
            return draw
        return lambda: (
            f"Left out: with {completed} completed trial{'s' * (completed != 1)} it would show noise, "
            f"not a trend; it needs at least {PARAMETER_PLOTS_MIN_TRIALS}."
        )

    return [
        ("Optimisation history", lambda: optuna_plots.plot_optimization_history(study)),
        ("Parameter importances (fANOVA)", lambda: _importances(found)),
        (
            "Parallel coordinates of the most important parameters",
            when_enough(lambda: optuna_plots.plot_parallel_coordinate(study, params=top)),
        ),
        (
            "Slices: objective against each important parameter",
            when_enough(lambda: optuna_plots.plot_slice(study, params=top)),
        ),
    ]


def _figure(title: str, draw: Callable) -> str:
    """Draw with matplotlib and inline the PNG; a figure that cannot be drawn yet says why instead."""
    import matplotlib.pyplot as plt

    plt.close("all")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            drawn = draw()
    except Exception as exc:  # noqa: BLE001 - e.g. too few trials for a plot; the page still renders
        return f"<h2>{html.escape(title)}</h2><p class='note'>Not drawn: {html.escape(str(exc))}</p>"
    if isinstance(drawn, str):
        return f"<h2>{html.escape(title)}</h2><p class='note'>{html.escape(drawn)}</p>"
    figure = plt.gcf()
    figure.set_size_inches(max(figure.get_size_inches()[0], 9), max(figure.get_size_inches()[1], 4.5))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close("all")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"


def _importances(found: dict[str, float] | str):
    import matplotlib.pyplot as plt

    if isinstance(found, str):
        return found
    names = list(found)[::-1]
    _, axes = plt.subplots(figsize=(9, 0.35 * len(names) + 1))
    axes.barh(names, [found[n] for n in names], color="#4c72b0")
    axes.set_xlabel("importance (share of explained variance)")


def _curves(trial: TrialRecord) -> None:
    import matplotlib.pyplot as plt

    history = trial.history
    epochs = [row.epoch for row in history]
    _, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(epochs, [row.train_loss for row in history], label="train loss")
    left.plot(epochs, [row.val["loss"] for row in history], label="val loss")
    left.set_xlabel("epoch")
    left.legend()
    right.plot(epochs, [row.val["accuracy"] for row in history], label="val accuracy", color="#55a868")
    if trial.best_epoch:
        right.axvline(trial.best_epoch, color="grey", linestyle=":", label="best epoch (kept)")
    right.set_xlabel("epoch")
    right.legend()


def _test_section(test: TestReport, ordinal: bool) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{row.precision:.3f}</td><td>{row.recall:.3f}</td>"
        f"<td>{row.f1:.3f}</td><td>{row.support}</td></tr>"
        for name, row in test.per_class.items()
    )
    return (
        f"<h2>Test split (evaluated once, at export)</h2><p>{test.images} images: accuracy "
        f"<b>{test.accuracy:.4f}</b>, balanced accuracy {test.balanced_accuracy:.4f}, macro F1 "
        f"{test.macro_f1:.4f}"
        + (
            f", quadratic weighted kappa <b>{test.qwk:.4f}</b>, mean absolute error {test.mae:.4f} grades"
            if ordinal
            else ""
        )
        + ".</p><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>images</th></tr>{rows}</table>"
    )


def _confusion(bundle: BundleManifest) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    assert bundle.test is not None  # export_best tests every bundle it writes
    matrix = np.array(bundle.test.confusion_matrix)
    names = bundle.class_names
    size = max(5.0, 0.6 * len(names) + 2)
    _, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if bundle.ordinal:  # the diagonal and its neighbours outlined: right, or a miss by one grade
        from matplotlib.patches import Rectangle

        for row, column in np.ndindex(matrix.shape):
            if abs(row - column) <= 1:
                outline = Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="#dd8452", linewidth=1.5)
                axes.add_patch(outline)
        axes.set_title("outlined: the true grade or one grade off", fontsize=9)
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            color="white" if count > matrix.max() / 2 else "black",
            fontsize=8,
        )


def reliability_section(bundle: BundleManifest) -> str:
    """The calibration's figures and its reliability diagram on test, before and after the temperature."""
    calibration = bundle.calibration
    title = "Calibration and prediction sets"
    if calibration is None:
        return f"<h2>{title}</h2><p class='note'>This bundle was exported before calibration; export it again.</p>"
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in calibration.describe())
    return _figure(title, lambda: _reliability(calibration)).replace("</h2>", f"</h2>{notes}", 1)


def _reliability(calibration: Calibration) -> str | None:
    import matplotlib.pyplot as plt

    if calibration.reliability_before is None or calibration.reliability_after is None:
        return "No test images: nothing to draw."
    _, axes = plt.subplots(figsize=(5.5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for label, table, color in (
        (f"model (ECE {calibration.test_ece_before:.3f})", calibration.reliability_before, "#c44e52"),
        (
            f"calibrated, T = {calibration.temperature:.2f} (ECE {calibration.test_ece_after:.3f})",
            calibration.reliability_after,
            "#4c72b0",
        ),
    ):
        axes.plot(table.confidence, table.accuracy, marker="o", color=color, label=label)
    axes.set_xlabel("confidence of the top class (test images, binned)")
    axes.set_ylabel("accuracy in the bin")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.legend(loc="upper left")
    return None


def _misclassified(bundle_dir: Path) -> str | None:
    import matplotlib.pyplot as plt

    from automl_img.data.decode import UnreadableImage, read_image

    wrong = [prediction for prediction in read_test_predictions(bundle_dir) if prediction.wrong]
    if not wrong:
        return "None: every test image was classified correctly."
    wrong.sort(key=lambda prediction: -prediction.probability)  # the most confident mistakes first
    shown = wrong[:MISCLASSIFIED_SHOWN]
    columns = 6
    rows = -(-len(shown) // columns)
    _, axes = plt.subplots(rows, columns, figsize=(2.0 * columns, 2.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, row in zip(axes.flat, shown):
        try:
            image = read_image(row.path)
            axis.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray" if image.shape[2] == 1 else None)
        except UnreadableImage:
            axis.text(0.5, 0.5, "file gone", ha="center")
        axis.set_title(f"true {row.true_class}\npred {row.predicted_class} {row.probability:.2f}", fontsize=8)
    plt.suptitle(f"{len(shown)} of {len(wrong)} misclassified test images, most confident first", fontsize=10)
    return None


def _explained(bundle_dir: Path, registry: Registry) -> str | None:
    """Overlays of the most confident mistakes, then of two correct test images per class: how a user catches a
    model that learned a marker in the corner instead of the anatomy."""
    import matplotlib.pyplot as plt

    from automl_img.data.decode import read_image
    from automl_img.outputs.explain import overlay
    from automl_img.outputs.predict import Bundle

    rows = [row for row in read_test_predictions(bundle_dir) if Path(row.path).is_file()]
    wrong = sorted((row for row in rows if row.wrong), key=lambda row: -row.probability)[:EXPLAINED_MISTAKES]
    right = _first_per_class([row for row in rows if not row.wrong], EXPLAINED_PER_CLASS)
    shown = wrong + right[: EXPLAINED_SHOWN - len(wrong)]
    if not shown:
        return "No test image is left to explain (the files moved)."
    maps = Bundle(bundle_dir, registry).explain([Path(row.path) for row in shown])
    columns, lines = 6, -(-len(shown) // 6)
    _, axes = plt.subplots(lines, columns, figsize=(2.0 * columns, 2.3 * lines), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, row, cam in zip(axes.flat, shown, maps):
        axis.imshow(overlay(read_image(row.path), cam))
        mark = "wrong: " if row.wrong else ""
        axis.set_title(f"{mark}true {row.true_class}\npred {row.predicted_class} {row.probability:.2f}", fontsize=8)
    plt.suptitle(
        f"red: where the evidence for the predicted class lies; {len(wrong)} most confident mistakes first", fontsize=10
    )
    return None


def _first_per_class(rows: list, count: int) -> list:
    taken: dict[str, int] = {}
    chosen = []
    for row in rows:
        if taken.get(row.true_class, 0) < count:
            taken[row.true_class] = taken.get(row.true_class, 0) + 1
            chosen.append(row)
    return chosen


def _trials_table(stored: StoredStudy) -> str:
    return f"<h2>Trials</h2>{trials_table(stored, 'trials')}"


def trials_table(stored: StoredStudy, css_class: str = "") -> str:
    """Every trial (``overview.TRIAL_COLUMNS``), after what each image size achieved where there were several."""
    sizes = size_rows(stored)
    by_size = f"<h3>By image size</h3>{html_table(SIZE_COLUMNS, sizes, css_class)}" if len(sizes) > 1 else ""
    return by_size + html_table(TRIAL_COLUMNS, trial_rows(stored), css_class)


def html_table(columns: list[str], rows: list[list], css_class: str = "") -> str:
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table{f' class={css_class!r}' if css_class else ''}><tr>{header}</tr>{body}</table>"


def html_page(title: str, body: str) -> str:
    """A whole self-contained page in the report's style."""
    return _PAGE.format(title=html.escape(title), body=body, created=time.strftime("%Y-%m-%d %H:%M"))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} th, td {{ padding: 2px 10px; text-align: left; }}
table.trials tr:nth-child(even), table.facts tr:nth-child(even) {{ background: #f5f5f5; }}
img {{ max-width: 100%; }} .note {{ color: #777; font-style: italic; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; }} .card {{ margin: 0; max-width: 250px; font-size: 0.8em; }}
.card img {{ margin-right: 4px; image-rendering: pixelated; }}
</style></head>
<body>
{body}
<p class="note">Written by automl-img on {created}.</p>
</body></html>
"""
