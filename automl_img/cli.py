"""The ``automl-img`` command: thin Typer commands that parse, call the library and print."""

from __future__ import annotations

import csv
import functools
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from automl_img.errors import AutomlImgError
from automl_img.plugins import PluginSource
from automl_img.searching import options

if TYPE_CHECKING:
    from dataclasses import Field

    from automl_img.outputs.bundle import FormatCheck

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="AutoML for image classification: search, export the best model, predict.",
)
_plugins = PluginSource()  # set by the global options


def _option(name: str) -> Any:
    """The Typer option of SearchOptions' field ``name``: its flag, help, environment variable and check."""
    option, kind = options.field_named(name), options.value_type(name)
    return Annotated[kind | None if option.default is None else kind, _option_info(option)]


def _option_info(option: Field[Any]) -> Any:
    rule = options.how(option)

    def check(value: Any) -> Any:  # a usage error (exit 2), as Typer's own for a value of the wrong type
        allowed = options.what_is_allowed(option, value)
        if allowed is not None:
            raise typer.BadParameter(f"{value:g} is not allowed; {allowed}")
        return value

    return typer.Option(
        options.flag_of(option),
        help=rule.describe(),
        envvar=rule.envvar,
        callback=check if rule.minimum is not None else None,
    )


StudyOption = Annotated[str | None, _option_info(options.field_named("study"))]
StorageOption = Annotated[str | None, _option_info(options.field_named("storage"))]


@app.callback()
def main_options(
    plugins_dir: Annotated[
        list[Path] | None,
        typer.Option("--plugins-dir", help="Load *.py plugins from this folder (repeatable; default ./plugins)."),
    ] = None,
    no_plugins: Annotated[
        bool,
        typer.Option(
            "--no-plugins",
            help="Only built-in plugins: no entry points, no local files (also AUTOML_IMG_NO_PLUGINS=1).",
        ),
    ] = False,
) -> None:
    global _plugins
    _plugins = PluginSource(plugins_dir, False if no_plugins else None)


def command_with_one_line_errors(name: str | None = None):
    """Register a command whose user mistakes print as one line and exit 1, with no traceback."""

    def register(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except AutomlImgError as exc:
                typer.echo(f"Error: {exc}", err=True)
                raise typer.Exit(1) from None

        return app.command(name)(run)

    return register


def _registry():
    return _plugins.load()


def _with_search_options(function: Any) -> Any:
    """``function(data_dir, **options, param, config, quiet, json_lines)`` shown to Typer with one option per
    declared field of SearchOptions in place of ``**options`` (Typer reads ``__signature__``)."""
    own = inspect.signature(function, eval_str=True).parameters
    made = (
        [own["data_dir"]]
        + [
            inspect.Parameter(
                option.name, inspect.Parameter.KEYWORD_ONLY, default=option.default, annotation=_option(option.name)
            )
            for option in options.declared()
        ]
        + [parameter for name, parameter in own.items() if name not in ("data_dir", "given")]
    )
    function.__signature__ = inspect.Signature(made)
    function.__annotations__ = {parameter.name: parameter.annotation for parameter in made}
    return function


@command_with_one_line_errors()
@_with_search_options
def search(
    data_dir: Annotated[
        str | None,
        typer.Argument(help="Folder with one sub-folder per class, or train/val/test folders of class folders."),
    ] = None,
    *,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="Narrow the space: NAME=VALUE fixes, NAME=A,B,C chooses, NAME=LOW..HIGH ranges."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with a \\[params] table of the same overrides.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    json_lines: Annotated[bool, typer.Option("--json", help="Print one JSON object per event.")] = False,
    **given: Any,
) -> None:
    """Search for the best model: an Optuna study that resumes when run again."""
    from automl_img.display import search_display
    from automl_img.display.console import console
    from automl_img.searching.run import run_search
    from automl_img.space import load_overrides, parse_override

    overrides = load_overrides(config) if config else {}
    overrides.update(dict(parse_override(text) for text in param or []))
    search_options = options.SearchOptions(source=data_dir, overrides=overrides, **given)
    registry = _registry()
    if registry.loaded_from() and not (quiet or json_lines):
        console.print(f"plugins: {'; '.join(registry.loaded_from())}")
    display = search_display(search_options, quiet, json_lines)
    try:
        summary = run_search(search_options, registry, display)
    except KeyboardInterrupt:  # once trials run, the search itself stops them, saves and sums up
        typer.echo("interrupted (Ctrl-C) before a trial started: nothing to save; run the same command again", err=True)
        raise typer.Exit(130) from None
    display.summary(summary)
    if not summary.ok:
        raise typer.Exit(130 if summary.interrupted else 1)


@command_with_one_line_errors()
def audit(
    data_dir: Annotated[
        str | None,
        typer.Argument(help="Folder with one sub-folder per class, or train/val/test folders of class folders."),
    ] = None,
    dataset: Annotated[str, typer.Option(help="Dataset loader plugin, as search takes it.")] = "folder",
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for audit.json, audit.html and exclusions.txt (default studies/NAME/audit)."),
    ] = None,
    labels: Annotated[
        bool,
        typer.Option(help="Look for likely label errors (a probe on pretrained features; needs the pretrained extra)."),
    ] = True,
) -> None:
    """Check a folder before a search: copies, leaks, label conflicts and errors, odd images."""
    from automl_img.display.console import audit_lines, console
    from automl_img.outputs.audit_report import run_audit

    for line in audit_lines(run_audit(_registry(), data_dir, dataset, out, labels)):
        console.print(line)


@command_with_one_line_errors("export-best")
def export_best(
    study: StudyOption = None,
    storage: StorageOption = None,
    out: Annotated[Path | None, typer.Option(help="Bundle folder (default studies/STUDY/export).")] = None,
    format: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            help="Also write savedmodel, tflite, tflite-int8 (quantised, ~4x smaller) or onnx "
            "(repeatable, or comma-separated); each is checked against the Keras model.",
        ),
    ] = None,
    refit: Annotated[
        bool, typer.Option(help="Retrain each averaged trial on train+val, for the epochs it needed, before the test.")
    ] = False,
    ensemble: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Average the predictions of this many best trials; 1 exports the best trial alone. Default: "
            "up to 3, each after the best kept only if the average scores at least as well on val with it.",
        ),
    ] = None,
    coverage: Annotated[
        float,
        typer.Option(help="Prediction sets hold the true class for this share of images (split-conformal)."),
    ] = 0.9,
    calibrate_on: Annotated[
        str | None,
        typer.Option(
            help="Fit the probabilities' temperature and the sets on: val (default) or test-half (default with "
            "--refit, which trains on val; the other half of test is then the test).",
        ),
    ] = None,
) -> None:
    """Export the best trials, averaged, as a bundle: model.keras, class names, preprocessing, test metrics."""
    from automl_img.display.console import console, export_lines, print_table
    from automl_img.outputs.export import export_best as run_export

    formats = [name.strip() for value in format or [] for name in value.split(",") if name.strip()]
    result = run_export(_registry(), study, storage, out, formats, refit, ensemble, coverage, calibrate_on)
    bundle = result.bundle
    for line in export_lines(result):
        console.print(line)
    keras = bundle.formats["keras"]
    print_table(
        None,
        ["format", "file", "bytes", "size", "test accuracy", "same class as Keras", "max |probability difference|"],
        [
            [
                name,
                c.file,
                c.bytes,
                f"{c.bytes / keras.bytes:.2f}x",
                _test_accuracy_text(name, c, keras),
                f"{c.same_class_fraction:.3f}",
                f"{c.max_abs_probability_difference:.1e}",
            ]
            for name, c in bundle.formats.items()
        ],
    )
    failed = [name for name, c in bundle.formats.items() if not c.ok]
    if failed:
        console.print(
            f"[red]warning: {', '.join(failed)} disagree with the Keras model beyond its tolerance; see bundle.json[/]"
        )
    console.print(f"use it: automl-img predict {result.folder} IMAGES...")


def _test_accuracy_text(name: str, check: FormatCheck, keras: FormatCheck) -> str:
    """A format's test accuracy, and how far it is from the Keras model's."""
    accuracy, keras_accuracy = check.test_accuracy, keras.test_accuracy
    assert accuracy is not None and keras_accuracy is not None  # export-best measures every format it writes
    return f"{accuracy:.4f}" + (f" ({accuracy - keras_accuracy:+.4f})" if name != "keras" else "")


@command_with_one_line_errors()
def predict(
    bundle: Annotated[Path, typer.Argument(help="A folder written by export-best.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Also write the predictions to this CSV file.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write them, with every class's probability, as JSON.")
    ] = None,
    format: Annotated[
        str,
        typer.Option("--format", help="Which of the bundle's models: keras, savedmodel, tflite, tflite-int8, onnx."),
    ] = "keras",
    unsafe: Annotated[
        bool, typer.Option("--unsafe", help="Allow a bundle whose model runs code on load (Keras safe_mode off).")
    ] = False,
    explain: Annotated[
        Path | None,
        typer.Option(
            "--explain",
            help="Also write an overlay per image into this folder: where the evidence for its class lies (occlusion).",
        ),
    ] = None,
) -> None:
    """Classify images with an exported bundle: class, calibrated probability and prediction set per image."""
    from automl_img.display.console import console, print_table
    from automl_img.outputs.predict import Bundle, collect_images

    registry = _registry()  # plugins may also register the custom layers a bundle's model needs
    files = collect_images(paths)
    model = Bundle(bundle, registry, format, safe_mode=not unsafe)
    predictions, unreadable = model.predict_files(files)
    calibration = model.manifest.calibration
    coverage = f"{calibration.coverage:.0%} set" if calibration else "set"
    grades = model.manifest.ordinal
    print_table(
        None,
        ["image", "class", "probability", coverage, *(["expected grade"] * grades), ""],
        [
            [
                p.path,
                p.class_name,
                f"{p.probability:.4f}",
                model.set_text(p),
                *([f"{p.expected_grade:.2f}"] if p.expected_grade is not None else []),
                "unsure" if p.unsure else "",
            ]
            for p in predictions
        ],
    )
    unsure = sum(p.unsure for p in predictions)
    if unsure:
        console.print(
            f"{unsure} of {len(predictions)} images are unsure: their {coverage} holds more than one class; "
            "check those by eye"
        )
    if csv_out:
        with open(csv_out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "class", "probability", "set", *(["expected_grade"] * grades)])
            writer.writerows(
                [
                    p.path,
                    p.class_name,
                    f"{p.probability:.6f}",
                    model.set_text(p),
                    *([f"{p.expected_grade:.4f}"] if p.expected_grade is not None else []),
                ]
                for p in predictions
            )
    if json_out:
        json_out.write_text(json.dumps([p.__dict__ for p in predictions], indent=2), encoding="utf-8")
    from rich.markup import escape

    if explain:
        written = model.write_explanations(files, explain)
        red = "red: covering it lowers the predicted class most"
        console.print(f"explanations: {len(written)} overlays in {escape(str(explain))}/ ({red})")
    if unreadable:
        from automl_img.study.config import describe_skips

        console.print(f"[yellow]skipped unreadable {escape(describe_skips(unreadable))}[/]")


@command_with_one_line_errors()
def studies(storage: StorageOption = None) -> None:
    """List the studies: trials done, pruned and failed, best score, last update."""
    from automl_img.display.console import print_table
    from automl_img.display.overview import study_rows

    rows = study_rows(storage)
    print_table(
        None,
        ["study", "completed", "pruned", "failed", "running", "best (val)", "last update", "data"],
        [
            [
                r.name,
                r.counts.completed,
                r.counts.pruned,
                r.counts.failed,
                r.counts.running,
                f"#{r.best_trial} {r.objective} {r.best_value:.4f}" if r.best_trial is not None else "",
                r.last_update.strftime("%Y-%m-%d %H:%M") if r.last_update else "",
                r.data,
            ]
            for r in rows
        ],
    )


@command_with_one_line_errors()
def show(
    study: Annotated[str | None, typer.Argument(help="Study name (default: the only one).")] = None,
    storage: StorageOption = None,
) -> None:
    """Show one study: the trials table, the best parameters and the parameter importances."""
    from automl_img.display.console import console, format_params, print_table
    from automl_img.display.overview import SIZE_COLUMNS, TRIAL_COLUMNS, importances, size_rows, trial_rows
    from automl_img.study.handle import StoredStudy

    found = StoredStudy.open(study, storage)
    print_table(f"study {found.name}", TRIAL_COLUMNS, trial_rows(found))
    sizes = size_rows(found)
    if len(sizes) > 1:
        print_table("by image size (completed trials)", SIZE_COLUMNS, sizes)
    skipped = found.skipped()
    if skipped:
        print_table(
            f"{len(skipped)} file(s) left out (also in {found.skipped_file})",
            ["file", "why", "when"],
            [[file.path, file.reason, file.stage] for file in skipped],
        )
    best = found.best_trial()
    if best is None:
        console.print("no completed trial yet")
        return
    console.print(f"best: trial #{best.number}, val {found.config.objective} {best.value:.4f}")
    console.print(f"      {format_params(best.params)}")
    ranked = importances(found.study)
    if isinstance(ranked, str):
        console.print(f"parameter importances: {ranked}")
    else:
        print_table(
            "parameter importances (fANOVA)",
            ["parameter", "importance", ""],
            [[name, f"{value:.3f}", "█" * round(40 * value)] for name, value in ranked.items()],
        )


@command_with_one_line_errors()
def report(
    study: Annotated[str | None, typer.Argument(help="Study name (default: the only one).")] = None,
    storage: StorageOption = None,
    out: Annotated[Path | None, typer.Option(help="HTML file (default studies/STUDY/report.html).")] = None,
) -> None:
    """Write a static HTML report: history, importances, learning curves, confusion matrix, mistakes."""
    from automl_img.display.console import console
    from automl_img.outputs.html_report import write_report

    console.print(f"wrote {write_report(_registry(), study, storage, out)}")


@command_with_one_line_errors()
def dashboard(
    study: Annotated[str | None, typer.Argument(help="Study to open (default: the only one).")] = None,
    storage: StorageOption = None,
    host: Annotated[
        str, typer.Option(help="Address to serve on; keep 127.0.0.1 unless you mean to share it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the study's storage (Ctrl-C stops it)."""
    from automl_img.display.console import console
    from automl_img.study.storage import load_study, open_storage

    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise AutomlImgError("the dashboard needs optuna-dashboard: pip install 'automl-img[dashboard]'") from None
    opened = open_storage(storage)
    found = load_study(opened, study, storage)
    console.print(
        f"optuna-dashboard for study {found.study_name}: "
        f"http://{host}:{port}/dashboard/studies/{opened.get_study_id_from_name(found.study_name)}  "
        "(Ctrl-C stops it)"
    )
    run_server(opened, host=host, port=port)


@command_with_one_line_errors()
def plugins() -> None:
    """List the dataset loaders, architectures and export formats, and where each comes from."""
    from automl_img.display.console import print_table
    from automl_img.plugins import HOOKS

    registry = _registry()
    rows = [
        [entry.kind, entry.name, entry.source, entry.description] for kind in HOOKS for entry in registry.of_kind(kind)
    ]
    print_table(None, ["kind", "name", "from", "description"], rows)


def main() -> None:
    app()
