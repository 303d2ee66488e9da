"""The Python API, for notebooks and scripts: the commands as functions, with their defaults and their errors."""

from __future__ import annotations

import functools
import html
import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

with warnings.catch_warnings():  # optuna imports tqdm.auto, which warns in a notebook that has no ipywidgets
    warnings.filterwarnings("ignore", message="IProgress not found")
    import optuna

from automl_img.errors import AutomlImgError, PluginError
from automl_img.hookspecs import hookimpl
from automl_img.plugins import PluginSource, Registry, pm
from automl_img.searching.plan import Stop, StopReason
from automl_img.study.handle import TrialCounts
from automl_img.study.records import TrialRecord
from automl_img.study.storage import STORAGE_ENV

if TYPE_CHECKING:
    from automl_img.display.overview import StudyRow
    from automl_img.models.metrics import TestReport
    from automl_img.outputs.audit_report import AuditResult
    from automl_img.outputs.bundle import BundleManifest
    from automl_img.outputs.predict import Bundle

PathLike = str | os.PathLike


def _storage(storage: str | None) -> str | None:
    return storage or os.environ.get(STORAGE_ENV) or None  # as the command line's --storage


def _registry() -> Registry:
    return PluginSource().load()  # as the command line: built-ins, entry points, ./plugins, register_plugin()


def search(
    data_dir: PathLike | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    config: PathLike | None = None,
    quiet: bool = False,
    **given: Any,
) -> SearchResult:
    """Search for the best model, as ``automl-img search``: run or resume a study until ``trials`` finished.

    Takes every option of the command, by the same names (``trial_timeout`` for ``--trial-timeout``), with the
    same defaults and checks (they are declared once, in ``automl_img.searching.options``; listed below), and:

        params: narrow the space as ``-p`` and ``--config`` do: a value fixes, a list chooses,
            ``{"min": ..., "max": ...}`` narrows a range; applied after ``config``'s ``[params]``.
        quiet: show only the summary; otherwise progress is redrawn in place (in a notebook) or printed.
        architecture: also takes the architecture itself, as KerasTuner's tuners do: a ``keras_tuner.HyperModel``
            (class, instance or partial of a class: ``input_shape`` and ``classes`` are given to it), a
            ``build(hp)`` or a ``build(hp, input_shape, num_classes)`` function. It is registered for this
            process under its lower-cased name (``HyperResNet``: ``hyperresnet``); give the same object to resume.

    Ctrl-C (a notebook's stop button) ends the search cleanly: the trial in flight is marked failed and the
    result says ``interrupted``; the same call resumes the study.
    """
    from automl_img.display import search_display
    from automl_img.searching.options import SearchOptions, declared, how
    from automl_img.searching.run import run_search
    from automl_img.space import load_overrides, overrides_from

    known = {option.name: option for option in declared()}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(
            f"search() got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"known: {', '.join(known)}, params, config, quiet"
        )
    if not isinstance(given.get("architecture"), (str, type(None))):
        given["architecture"] = _register_architecture(given["architecture"])
    for name, option in known.items():  # as the command line: --storage and --artifacts fall back on the environment
        variable = how(option).envvar
        if variable and given.get(name) is None:
            given[name] = os.environ.get(variable) or None
    overrides = load_overrides(Path(config)) if config else {}
    overrides.update(overrides_from(params or {}, "params: "))
    options = SearchOptions(source=os.fspath(data_dir) if data_dir is not None else None, overrides=overrides, **given)
    display = search_display(options, quiet)
    summary = run_search(options, _registry(), display)
    display.summary(summary)
    return SearchResult(
        summary.study_name,
        options.storage,
        summary.objective,
        summary.best_trial,
        summary.counts,
        summary.stop,
        summary.seconds,
        summary.unreadable,
    )


def _register_architecture(architecture: Any) -> str:
    """Register an architecture object as an in-process plugin; returns its name."""
    named = architecture.func if isinstance(architecture, functools.partial) else architecture
    name = str(getattr(named, "__name__", type(named).__name__)).lower().replace("_", "-")

    class _Architecture:
        @hookimpl
        def register_architectures(self, register: Any) -> None:
            register(name, architecture)

    register_plugin(_Architecture(), name=f"architecture:{name}")
    return name


def _search_signature() -> None:
    """``search``'s signature and docstring name every option (help(), a notebook's completion, inspect)."""
    from automl_img.searching.options import declared, how, value_type

    signature = inspect.signature(search)
    own, keyword = signature.parameters, inspect.Parameter.KEYWORD_ONLY
    options = [
        inspect.Parameter(
            option.name,
            keyword,
            default=option.default,
            annotation=value_type(option.name) | None if option.default is None else value_type(option.name),
        )
        for option in declared()
    ]
    search.__signature__ = inspect.Signature(  # type: ignore[attr-defined]  # functions take __signature__
        [own["data_dir"], *options, own["params"], own["config"], own["quiet"]],
        return_annotation=signature.return_annotation,
    )
    search.__doc__ = (
        (search.__doc__ or "")
        + "\n    Options:\n\n"
        + "".join(f"        {option.name}: {how(option).describe()}\n" for option in declared())
    )


_search_signature()


@dataclass(frozen=True)
class SearchResult:
    """A study as a search left it: the best trial and its scores, how many trials, why the search stopped."""

    study: str  #: the study's name
    storage_url: str | None = field(repr=False)  #: as given (None: the default under studies/); may hold a password
    objective: str  #: the val score trials are ranked by
    best_trial: TrialRecord | None  #: its number, val value, parameters, history, val scores
    counts: TrialCounts  #: completed, pruned, failed, running
    stop: StopReason | None = None  #: why the search stopped; None for a study opened with ``show``
    seconds: float = 0.0
    unreadable: list[tuple[str, str]] = field(default_factory=list, repr=False)  #: files OpenCV could not read

    @property
    def stopped_because(self) -> str:
        """The sentence the command line prints; empty for a study opened with ``show``."""
        return self.stop.text if self.stop else ""

    @property
    def interrupted(self) -> bool:
        return self.stop is not None and self.stop.kind == Stop.INTERRUPTED

    @property
    def best_value(self) -> float | None:
        return None if self.best_trial is None else self.best_trial.value

    @property
    def best_params(self) -> dict[str, Any]:
        return {} if self.best_trial is None else dict(self.best_trial.params)

    @property
    def optuna_study(self) -> optuna.Study:
        """The Optuna study itself (``trials_dataframe()``, Optuna's plots)."""
        from automl_img.study.handle import StoredStudy

        return StoredStudy.open(self.study, self.storage_url).study

    def trials(self) -> list[TrialRecord]:
        from automl_img.study.handle import StoredStudy

        return StoredStudy.open(self.study, self.storage_url).trials()

    def export_best(
        self,
        out: PathLike | None = None,
        formats: Sequence[str] = (),
        refit: bool = False,
        ensemble: int | None = None,
        coverage: float = 0.9,
        calibrate_on: str | None = None,
    ) -> ExportedBundle:
        """``export_best`` for this study."""
        return export_best(
            self.study,
            storage=self.storage_url,
            out=out,
            formats=formats,
            refit=refit,
            ensemble=ensemble,
            coverage=coverage,
            calibrate_on=calibrate_on,
        )

    def report(self, out: PathLike | None = None) -> Report:
        """``report`` for this study; shown inline in a notebook."""
        return report(self.study, storage=self.storage_url, out=out)

    def __repr__(self) -> str:
        best = "" if self.best_trial is None else f", best #{self.best_trial.number} {self.best_value:.4f}"
        return f"<SearchResult study {self.study!r}: {self.counts.completed} completed{best}>"

    def __str__(self) -> str:
        counts, best = self.counts, self.best_trial
        text = f"study {self.study}: {counts.completed} completed, {counts.pruned} pruned, {counts.failed} failed" + (
            f"; stopped: {self.stopped_because}" if self.stopped_because else ""
        )
        if best is None:
            return text + "; no completed trial yet"
        from automl_img.display.console import format_params

        return (
            text + f"\nbest: trial #{best.number}, val {self.objective} {best.value:.4f}"
            f"\n      {format_params(best.params)}"
        )

    def _repr_html_(self) -> str:
        from automl_img.outputs.html_report import trials_table
        from automl_img.study.handle import StoredStudy

        header = "".join(f"<div>{html.escape(line)}</div>" for line in str(self).splitlines())
        return f"<div style='font-family:monospace;white-space:pre-wrap'>{header}</div>" + trials_table(
            StoredStudy.open(self.study, self.storage_url)
        )


def show(study: str | None = None, *, storage: str | None = None) -> SearchResult:
    """A study that was searched before (here or on the command line), as ``automl-img show`` sees it."""
    from automl_img.study.handle import StoredStudy

    found = StoredStudy.open(study, _storage(storage))
    return SearchResult(found.name, _storage(storage), found.config.objective, found.best_trial(), found.counts())


def studies(*, storage: str | None = None) -> list[StudyRow]:
    """Every study in the storage, as ``automl-img studies`` lists them."""
    from automl_img.display.overview import study_rows

    return study_rows(_storage(storage))


def export_best(
    study: str | None = None,
    *,
    storage: str | None = None,
    out: PathLike | None = None,
    formats: Sequence[str] = (),
    refit: bool = False,
    ensemble: int | None = None,
    coverage: float = 0.9,
    calibrate_on: str | None = None,
) -> ExportedBundle:
    """Average the best trials, test once on the held-out split and write a bundle, as ``automl-img export-best``.

    Args:
        formats: also write savedmodel, tflite, tflite-int8 or onnx, each checked against the Keras model.
        refit: retrain each averaged configuration on train+val first.
        ensemble: how many best trials are averaged; 1 exports the best trial alone. None: up to 3, each after
            the best kept only if the average scores at least as well on val with it.
        coverage: the share of images whose prediction set should hold the true class.
        calibrate_on: "val" (default without ``refit``) or "test-half" (default with it): the images the
            probabilities' temperature and the sets' threshold are fitted on (test-half: the other half tests).
    """
    from automl_img.outputs.export import export_best as run_export

    if isinstance(formats, str):
        formats = [name.strip() for name in formats.split(",") if name.strip()]
    result = run_export(
        _registry(),
        study,
        _storage(storage),
        Path(out) if out is not None else None,
        list(formats),
        refit,
        ensemble,
        coverage,
        calibrate_on,
    )
    return ExportedBundle(result.folder, result.bundle)


@dataclass(frozen=True)
class ExportedBundle:
    """A bundle export_best wrote: its folder and manifest (members, test scores, format checks)."""

    folder: Path
    manifest: BundleManifest

    @property
    def test(self) -> TestReport:
        """Scores on the held-out test split: accuracy, balanced accuracy, macro F1, per class, confusion matrix."""
        test = self.manifest.test
        assert test is not None  # export_best tests every bundle it writes
        return test

    def load(self, format: str = "keras", unsafe: bool = False) -> Bundle:
        return load_bundle(self.folder, format=format, unsafe=unsafe)

    def predict(self, images: Any) -> Any:
        """``load().predict(images)``."""
        return self.load().predict(images)

    def __repr__(self) -> str:
        return f"<ExportedBundle {self.folder}: test accuracy {self.test.accuracy:.4f}>"

    def __str__(self) -> str:
        from automl_img.display.console import export_lines
        from automl_img.display.notebook import plain
        from automl_img.outputs.export import ExportResult

        return "\n".join(plain(line) for line in export_lines(ExportResult(self.folder, self.manifest)))

    def _repr_html_(self) -> str:
        import matplotlib

        from automl_img.outputs.html_report import html_table, reliability_section

        matplotlib.use("Agg")
        lines = "".join(f"<div>{html.escape(line)}</div>" for line in str(self).splitlines())
        return (
            f"<div style='font-family:monospace'>{lines}</div>"
            + reliability_section(self.manifest)
            + html_table(
                ["format", "file", "bytes", "test accuracy", "same class as Keras"],
                [
                    [name, c.file, c.bytes, f"{c.test_accuracy:.4f}", f"{c.same_class_fraction:.3f}"]
                    for name, c in self.manifest.formats.items()
                ],
            )
        )


def load_bundle(folder: PathLike, *, format: str = "keras", unsafe: bool = False) -> Bundle:
    """An exported bundle, ready to ``predict`` files, folders, numpy arrays and PIL images (``automl-img predict``).

    Args:
        format: which of the bundle's models: keras, savedmodel, tflite, tflite-int8, onnx.
        unsafe: allow a Keras model that runs code on load (safe mode off).
    """
    from automl_img.outputs.predict import Bundle

    if not Path(folder).is_dir():
        raise AutomlImgError(f"{folder} is not a folder; give the folder export_best wrote (its .folder)")
    return Bundle(folder, _registry(), format, safe_mode=not unsafe)


def audit(
    data_dir: PathLike | None = None, *, dataset: str = "folder", out: PathLike | None = None, labels: bool = True
) -> AuditResult:
    """Check a folder before a search, as ``automl-img audit``: copies (``.report.pairs``, each a duplicate,
    a label conflict or a leak across train/val/test), likely label errors (``labels``), odd and unreadable
    images; writes audit.json, audit.html (``.page``), exclusions.txt (for ``search(exclude=...)``) and a cache
    that makes the next audit of the folder quick into ``out`` (default studies/NAME/audit)."""
    from automl_img.outputs.audit_report import run_audit

    source = os.fspath(data_dir) if data_dir is not None else None
    return run_audit(_registry(), source, dataset, Path(out) if out is not None else None, labels)


def report(study: str | None = None, *, storage: str | None = None, out: PathLike | None = None) -> Report:
    """Write the study's HTML report (exporting the best trials first when needed), as ``automl-img report``."""
    from automl_img.outputs.html_report import write_report

    return Report(write_report(_registry(), study, _storage(storage), Path(out) if out is not None else None))


@dataclass(frozen=True)
class Report:
    """The report's HTML file; a notebook shows the page inline."""

    path: Path

    def _repr_html_(self) -> str:
        page = html.escape(self.path.read_text(encoding="utf-8"), quote=True)
        # In a frame: the page's own styles stay out of the notebook's.
        return f"<iframe srcdoc=\"{page}\" style='width:100%;height:720px;border:0'></iframe>"


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin (an object or module with ``@hookimpl`` functions) for this process and its trials.

    Registering again under the same name replaces the earlier one, so a notebook cell can be run twice.
    Plugins defined in a notebook or script are sent to the trial processes by value (cloudpickle).

    Returns:
        The name it is registered under (default: its module's or class's name).
    """
    name = name or getattr(plugin, "__name__", None) or f"{type(plugin).__module__}.{type(plugin).__qualname__}"
    if name.startswith("automl_img.default_plugins."):
        raise PluginError(f"{name} is a built-in plugin's name; register under another name")
    unregister_plugin(name)
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # noqa: BLE001 - pluggy's refusal or the plugin's own failure, said as a PluginError
        raise PluginError(f"plugin {name} cannot be registered: {exc}") from None
    return name


def unregister_plugin(plugin: object | str) -> None:
    """Remove a plugin ``register_plugin`` added, by name or by the object itself; nothing if it is not there."""
    found = pm.get_plugin(plugin) if isinstance(plugin, str) else plugin if pm.is_registered(plugin) else None
    if found is not None:
        pm.unregister(found)
