"""The ``automl-img`` command: thin Typer commands that parse, call the library and print."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from automl_img.errors import AutomlImgError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="AutoML for image classification: search, export the best model, predict.",
)
_state: dict[str, object] = {"plugin_dirs": None, "third_party": None}

StudyOption = Annotated[Optional[str], typer.Option("--study", help="Study name (default: the data folder's name).")]
StorageOption = Annotated[Optional[str], typer.Option(
    "--storage", envvar="AUTOML_IMG_STORAGE",
    help="Optuna storage URL: sqlite:///FILE.db, postgresql://USER:PASS@HOST/DB or a journal FILE.log "
         "[default: sqlite:///studies/automl-img.db].")]


@app.callback()
def main_options(
    plugins_dir: Annotated[Optional[list[Path]], typer.Option(
        "--plugins-dir", help="Load *.py plugins from this folder (repeatable; default ./plugins).")] = None,
    no_plugins: Annotated[bool, typer.Option(
        "--no-plugins", help="Only built-in plugins: no entry points, no local files (also AUTOML_IMG_NO_PLUGINS=1).")] = False,
) -> None:
    _state["plugin_dirs"] = plugins_dir
    _state["third_party"] = False if no_plugins else None


def _at_least_one(value: float | None) -> float | None:
    if value is not None and value < 1:
        raise typer.BadParameter(f"{value:g} is too small; use 1 or more")
    return value


def command(name: str | None = None):
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
    from automl_img.plugins import load_plugins

    return load_plugins(_state["plugin_dirs"], _state["third_party"])


@command()
def search(
    data_dir: Annotated[Optional[str], typer.Argument(
        help="Folder with one sub-folder per class, or train/val/test folders of class folders.")] = None,
    trials: Annotated[int, typer.Option(callback=_at_least_one, help="Finished (completed or pruned) trials the study should reach.")] = 50,
    timeout: Annotated[Optional[float], typer.Option(callback=_at_least_one, help="Stop starting epochs after this many seconds.")] = None,
    study: StudyOption = None,
    storage: StorageOption = None,
    dataset: Annotated[str, typer.Option(help="Dataset loader plugin (see `automl-img plugins`).")] = "folder",
    architecture: Annotated[str, typer.Option(help="Architecture plugin (see `automl-img plugins`).")] = "blog-cnn",
    seed: Annotated[Optional[int], typer.Option(help="Fixes the split, the sampler and the Keras seeds.")] = None,
    epochs: Annotated[int, typer.Option(callback=_at_least_one, help="Maximum epochs per trial.")] = 40,
    patience: Annotated[int, typer.Option(callback=_at_least_one, help="Stop a trial after this many epochs without improvement.")] = 10,
    trial_timeout: Annotated[Optional[float], typer.Option(callback=_at_least_one, help="Maximum seconds per trial.")] = None,
    max_failures: Annotated[int, typer.Option(callback=_at_least_one, help="Stop after this many failed trials in a row.")] = 5,
    objective: Annotated[str, typer.Option(help="accuracy, balanced_accuracy, macro_f1 or loss (on val).")] = "accuracy",
    sampler: Annotated[str, typer.Option(help="Optuna sampler: tpe or random.")] = "tpe",
    pruner: Annotated[str, typer.Option(help="Stops weak trials early: median, hyperband or none.")] = "median",
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", "-p", help="Narrow the space: NAME=VALUE fixes, NAME=A,B,C chooses, NAME=LOW..HIGH ranges.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file with a [params] table of the same overrides.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    json_lines: Annotated[bool, typer.Option("--json", help="Print one JSON object per event.")] = False,
) -> None:
    """Search for the best model: an Optuna study that resumes when run again."""
    from automl_img.console import SearchDisplay, print_search_summary
    from automl_img.space import load_overrides, parse_override
    from automl_img.study.search import SearchOptions, run_search

    overrides = load_overrides(config) if config else {}
    overrides.update(dict(parse_override(text) for text in param or []))
    options = SearchOptions(
        source=data_dir, dataset=dataset, architecture=architecture, study=study, storage=storage, trials=trials,
        timeout=timeout, epochs=epochs, patience=patience, trial_timeout=trial_timeout, seed=seed,
        objective=objective, sampler=sampler, pruner=pruner, overrides=overrides,
        max_consecutive_failures=max_failures,
    )
    mode = "jsonl" if json_lines else "quiet" if quiet else "normal"
    summary = run_search(options, _registry(), SearchDisplay(trials, mode))
    print_search_summary(summary, mode)
    if not summary.ok:
        raise typer.Exit(130 if summary.interrupted else 1)


@command("export-best")
def export_best(
    study: StudyOption = None,
    storage: StorageOption = None,
    out: Annotated[Optional[Path], typer.Option(help="Bundle folder (default studies/STUDY/export).")] = None,
) -> None:
    """Export the best trial as a bundle: model.keras, class names, preprocessing, test metrics."""
    from automl_img.console import console
    from automl_img.export import export_best as run_export

    result = run_export(_registry(), study, storage, out)
    test = result.bundle["test"]
    console.print(f"exported trial #{result.trial.number} of study {result.bundle['study']} to {result.folder}")
    console.print(f"test split: {test['images']} images, accuracy [bold]{test['accuracy']:.4f}[/], "
                  f"balanced accuracy {test['balanced_accuracy']:.4f}, macro F1 {test['macro_f1']:.4f}")
    console.print(f"use it: automl-img predict {result.folder} IMAGES...")


@command()
def predict(
    bundle: Annotated[Path, typer.Argument(help="A folder written by export-best.")],
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).")],
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Also write the predictions to this CSV file.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write them, with every class's probability, as JSON.")] = None,
    unsafe: Annotated[bool, typer.Option("--unsafe", help="Allow a bundle whose model runs code on load (Keras safe_mode off).")] = False,
) -> None:
    """Classify images with an exported bundle; prints a table of class and probability per image."""
    from automl_img.console import console, print_table
    from automl_img.predict import Bundle, collect_images

    _registry()  # plugins may register the custom layers a bundle's model needs
    files = collect_images(paths)
    predictions, unreadable = Bundle(bundle, safe_mode=not unsafe).predict_files(files)
    print_table(None, ["image", "class", "probability"],
                [[p.path, p.class_name, f"{p.probability:.4f}"] for p in predictions])
    if csv_out:
        with open(csv_out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "class", "probability"])
            writer.writerows([p.path, p.class_name, f"{p.probability:.6f}"] for p in predictions)
    if json_out:
        json_out.write_text(json.dumps([p.__dict__ for p in predictions], indent=2), encoding="utf-8")
    if unreadable:
        from automl_img.study.config import describe_skips

        console.print(f"[yellow]skipped unreadable {describe_skips(unreadable)}[/]")


@command()
def plugins() -> None:
    """List the dataset loaders and architectures, and where each comes from."""
    from automl_img.console import print_table

    registry = _registry()
    rows = [[entry.kind, entry.name, entry.source, entry.description]
            for kind in ("dataset", "architecture") for entry in registry.of_kind(kind)]
    print_table(None, ["kind", "name", "from", "description"], rows)


def main() -> None:
    app()
