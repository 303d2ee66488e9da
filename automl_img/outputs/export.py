"""export-best: the best trials, rebuilt from their stored parameters and weights, averaged, tested once, bundled."""

from __future__ import annotations

import contextlib
import platform
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from automl_img.data.decode import DECODE_VERSION
from automl_img.data.dicom import WINDOWING
from automl_img.data.imageset import PARTS
from automl_img.errors import AutomlImgError, StudyError
from automl_img.hookspecs import Exporter
from automl_img.models.families import Families
from automl_img.native_output import output_to
from automl_img.outputs import calibration as calibrate
from automl_img.outputs.bundle import (
    BundleManifest,
    DatasetRecord,
    FormatCheck,
    Member,
    Preprocessing,
    Refit,
    TestPrediction,
    write_test_predictions,
)
from automl_img.outputs.calibration import set_text
from automl_img.plugins import Entry, Registry
from automl_img.space import StoredHyperParameters, TrainingParams
from automl_img.study.config import StudyData
from automl_img.study.handle import StoredStudy
from automl_img.study.records import TrialRecord, completed_value

EXPORT_LOG = "export.log"  # what the converters printed
PREDICT_CHUNK = 1024  # test images per call when a format is checked on the test split
QUANTIZING_IMAGES = 256  # training images a quantised format calibrates its activation ranges on
QUANTIZED_MAX_ACCURACY_LOSS = 0.01  # a quantised format passes its check within 1 point of Keras' test accuracy
# By default the bundle averages up to this many best trials, each kept only where the average scores at least
# as well on val with it (on two Fashion-MNIST subsets three averaged were 1.1 and 2.1 points above the best
# alone; on the full set two weaker members cost 0.34).
DEFAULT_ENSEMBLE = 3
DEFAULT_COVERAGE = 0.9
CALIBRATION_SPLITS = ("val", "test-half")


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    bundle: BundleManifest


def export_best(
    registry: Registry,
    study_name: str | None = None,
    storage_url: str | None = None,
    out: Path | None = None,
    formats: Sequence[str] = (),
    refit: bool = False,
    ensemble: int | None = None,
    coverage: float = DEFAULT_COVERAGE,
    calibrate_on: str | None = None,
) -> ExportResult:
    """Rebuild the best trials' models, evaluate them once on the test split, write the bundle folder.

    Args:
        formats: extra formats besides ``keras`` (exporter plugin names), each checked against Keras.
        refit: retrain each member's configuration on train+val for the epochs its trial needed first.
        ensemble: average the probabilities of this many best trials (fewer if fewer completed; 1: the best).
            None: the best, then each of the next DEFAULT_ENSEMBLE - 1 best that does not lower the average's
            val score (``select_members``).
        coverage: the share of images whose prediction set should hold the true class.
        calibrate_on: where the temperature and the sets' threshold are fitted: "val" (the default; not with
            ``refit``, which trains on val) or "test-half" (half of the test split; the other half tests).
    """
    calibrate_on = _calibration_split(calibrate_on, refit, coverage)
    if ensemble is not None and ensemble < 1:
        raise StudyError(f"--ensemble must be 1 or more (got {ensemble}); 1 exports the best trial alone")
    stored = StoredStudy.open(study_name, storage_url)
    exporters = [registry.get("exporter", name) for name in dict.fromkeys(["keras", *formats])]
    count = ensemble or DEFAULT_ENSEMBLE
    members = stored.best_trials(count)
    for trial in members:
        _check_weights_are_here(stored, trial, count)
    target = Path(out) if out else stored.export_folder  # as the user will read it
    folder = target.resolve()
    staging = folder.with_name(f".{folder.name}.partial")  # the bundle is written here, then swapped in
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with output_to(staging / EXPORT_LOG):  # TensorFlow's notes, the converters' screens of MLIR
            bundle = _write_bundle(
                staging, stored, registry, members, exporters, refit, ensemble is None, coverage, calibrate_on
            )
    except _FormatFailed as failed:
        kept = folder.with_name(f"{folder.name}.failed-{EXPORT_LOG}")
        shutil.move(staging / EXPORT_LOG, kept)
        shutil.rmtree(staging, ignore_errors=True)
        raise AutomlImgError(
            f"cannot write the {failed.format} format: {failed.reason} (the converter's log: {kept})"
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, folder)
    return ExportResult(target, bundle)


class _FormatFailed(Exception):
    def __init__(self, format: str, reason: str):
        super().__init__(reason)
        self.format, self.reason = format, reason


def _write_bundle(
    staging: Path,
    stored: StoredStudy,
    registry: Registry,
    members: list[TrialRecord],
    exporters: list[Entry[Exporter]],
    refit: bool,
    select: bool,
    coverage: float,
    calibrate_on: str,
) -> BundleManifest:
    """Rebuild and average the members (those that help, with ``select``), test them once, write every format and
    the manifest into ``staging``."""
    from automl_img.models import metrics, training

    config, best = stored.config, members[0]
    data = stored.open_data(registry)
    architectures = config.families(registry)
    built = [_member_model(stored, trial, data, architectures) for trial in members]
    models = [model for model, _ in built]
    left_out: list[int] = []
    if select and len(models) > 1:
        val = [_val_probabilities(model, data, config.channels) for model in models]
        kept = select_members([probabilities for _, probabilities in val], data.labels[val[0][0]], config.objective)
        left_out = [trial.number for i, trial in enumerate(members) if i not in kept]
        members, models, built = [members[i] for i in kept], [models[i] for i in kept], [built[i] for i in kept]
    model = training.ensemble(models)
    image_size = model.input_shape[1]
    decoded = data.cache.load(image_size, config.channels)
    images, labels = decoded.images, data.labels
    rows = {part: data.rows(part, decoded) for part in PARTS}
    val_probabilities = training.predict(model, images, rows["val"])
    val_scores = metrics.scores(labels[rows["val"]], val_probabilities)  # before a refit
    refit_record = None
    if refit:
        models = [_member_model(stored, trial, data, architectures, refit=True)[0] for trial in members]
        model = training.ensemble(models)
        refit_record = Refit([_refit_epochs(trial) for trial in members], int(len(rows["train"]) + len(rows["val"])))
    if calibrate_on == "val":
        fit_probabilities, fit_rows = val_probabilities, rows["val"]
    else:  # half of the test split fits, the other half tests
        if len(rows["test"]) < 2:
            raise StudyError("--calibrate-on test-half needs a test split; this study has no test images")
        shuffled = np.random.default_rng(0).permutation(rows["test"])
        fit_rows, rows["test"] = np.sort(shuffled[: len(shuffled) // 2]), np.sort(shuffled[len(shuffled) // 2 :])
        fit_probabilities = training.predict(model, images, fit_rows)
    model_probabilities = training.predict(model, images, rows["test"])
    calibration = calibrate.fit(
        fit_probabilities,
        labels[fit_rows],
        model_probabilities,
        labels[rows["test"]],
        coverage,
        np.mean([training.target_matrix(len(config.class_names), params) for _, params in built], axis=0),
        ordinal=config.ordinal,
        fitted_on="val" if calibrate_on == "val" else "half of test",
    )
    test_probabilities = calibration.apply(model_probabilities)
    bundle = BundleManifest(
        model=exporters[0].implementation.file,
        class_names=list(config.class_names),
        preprocessing=Preprocessing(
            image_size=image_size,
            channels=config.channels,
            color="grayscale" if config.channels == 1 else "RGB",
            input=f"uint8 array (batch, {image_size}, {image_size}, {config.channels}), 0-255",
            scaling="none outside the model: it divides by 255 itself",
            resize="OpenCV, stretched to a square: INTER_AREA when shrinking, INTER_LINEAR when enlarging",
            decode=DECODE_VERSION,
            windowing=WINDOWING,
        ),
        study=stored.name,
        trial=best.number,
        members=[
            Member(
                trial.number,
                completed_value(trial),
                member.input_shape[1],
                trial.best_epoch,
                trial.params,
                trial.precision or "float32",
            )
            for trial, member in zip(members, models)
        ],
        left_out=left_out,
        architecture=config.architecture,
        dataset=DatasetRecord(
            config.dataset, config.source, config.split_hash, {part: len(part_rows) for part, part_rows in rows.items()}
        ),
        objective=config.objective,
        ordinal=config.ordinal,
        params=best.params,
        best_epoch=best.best_epoch,
        refit=refit_record,
        val_scores=val_scores,
        val_scores_stored=best.val_scores,
        test=metrics.report(labels[rows["test"]], test_probabilities, config.class_names),
        calibration=calibration,
        reproduce={"search_command": best.command, "seed": best.seed, "export_command": " ".join(sys.argv)},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        created_on={"host": socket.gethostname(), "python": platform.python_version(), **_library_versions()},
    )
    test = _TestSplit(
        images,
        rows["test"],
        labels[rows["test"]],
        test_probabilities,
        [str(data.split.image_set.absolute(data.split.image_set.paths[row])) for row in rows["test"]],
    )
    quantizing = np.random.default_rng(0).permutation(rows["train"])[:QUANTIZING_IMAGES]
    _write_formats(staging, model, exporters, bundle, test, images[np.sort(quantizing)], calibration)
    bundle.write(staging)
    (staging / "report.txt").write_text(_report_text(bundle), encoding="utf-8")
    names = bundle.class_names
    write_test_predictions(
        staging,
        [
            TestPrediction(
                path, names[label], names[int(row.argmax())], float(row.max()), set_text(names, held, bundle.ordinal)
            )
            for path, label, row, held in zip(
                test.files, test.labels, test_probabilities, calibration.sets(test_probabilities)
            )
        ],
    )
    return bundle


@dataclass(frozen=True)
class _TestSplit:
    images: np.ndarray  # every image of the study (memory-mapped); the test rows are used
    rows: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray  # the Keras model's, calibrated
    files: list[str]

    def predict(self, predictor) -> np.ndarray:
        """A format's probabilities for the test images, a chunk at a time (the split may not fit in memory)."""
        chunks = [
            predictor(np.ascontiguousarray(self.images[self.rows[start : start + PREDICT_CHUNK]]))
            for start in range(0, len(self.rows), PREDICT_CHUNK)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.probabilities.shape[1]), np.float32)


def _calibration_split(calibrate_on: str | None, refit: bool, coverage: float) -> str:
    if not 0 < coverage < 1:
        raise StudyError(f"--coverage must lie between 0 and 1 (got {coverage}); 0.9 asks for sets that hold 9 in 10")
    if calibrate_on not in (None, *CALIBRATION_SPLITS):
        raise StudyError(f"--calibrate-on must be one of {', '.join(CALIBRATION_SPLITS)} (got {calibrate_on})")
    if refit and calibrate_on == "val":
        raise StudyError(
            "--refit trains on the val split, so it cannot calibrate the probabilities; use --calibrate-on test-half"
        )
    return calibrate_on or ("test-half" if refit else "val")


def select_members(val_probabilities: list[np.ndarray], labels: np.ndarray, objective: str) -> list[int]:
    """Forward selection over candidates ranked best first (Caruana et al., 2004, without repeats): the first
    is kept, each next one only where the average with it scores at least as well on val as without it."""
    from automl_img.models.metrics import OBJECTIVES, scores

    sign = 1 if OBJECTIVES[objective] else -1
    kept, total = [0], np.array(val_probabilities[0], dtype=np.float64)
    score = sign * scores(labels, total)[objective]
    for index in range(1, len(val_probabilities)):
        candidate = total + val_probabilities[index]
        candidate_score = sign * scores(labels, candidate / (len(kept) + 1))[objective]
        if candidate_score >= score:
            kept.append(index)
            total, score = candidate, candidate_score
    return kept


def _val_probabilities(model, data: StudyData, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """A member's val rows and probabilities on them, from images decoded at its own size (a file that cannot be
    decoded cannot be at any size: every member has the same rows)."""
    from automl_img.models import training

    decoded = data.cache.load(model.input_shape[1], channels)
    rows = data.rows("val", decoded)
    return rows, training.predict(model, decoded.images, rows)


def _member_model(
    stored: StoredStudy, trial: TrialRecord, data: StudyData, architectures: Families, refit: bool = False
) -> tuple[Any, TrainingParams]:
    """The trial's model with its best epoch's weights, or retrained on train+val for as many epochs (its
    schedule fitted to them); flip-averaged where the trial trained on mirrored images, as it was scored. And
    its training parameters."""
    from automl_img.models import training

    config = stored.config
    training.keras.utils.set_random_seed(trial.seed or 0)  # a refit starts as the trial did
    model, params = training.build_for_trial(
        architectures,
        StoredHyperParameters(trial.params),
        config.channels,
        len(config.class_names),
        name=f"trial_{trial.number}",
        ordinal=config.ordinal,
    )
    if not refit:
        model.load_weights(stored.weights_file(trial))
        return training.as_trained(model, params), params
    decoded = data.cache.load(params.image_size, config.channels)
    train, val = data.rows("train", decoded), data.rows("val", decoded)
    training.refit(
        model,
        decoded.images,
        data.labels,
        np.concatenate([train, val]),
        params,
        _refit_epochs(trial),
        config.class_weights(data.labels, train),
    )
    return training.as_trained(model, params), params


def _refit_epochs(trial: TrialRecord) -> int:
    return trial.best_epoch or 1


def _check_weights_are_here(stored: StoredStudy, trial: TrialRecord, ensemble: int) -> None:
    try:
        stored.weights_file(trial)
    except StudyError as exc:
        raise StudyError(f"{exc}" + (" (or export fewer trials with --ensemble)" if ensemble > 1 else "")) from None


class _QuantizedExporter(Exporter, Protocol):
    """An exporter with ``quantized = True``: its ``export`` takes training images to calibrate on."""

    quantized: bool

    def export(self, model: Any, path: Path, calibration_images: np.ndarray | None = None) -> None: ...


def _write_formats(
    staging: Path,
    model,
    exporters: list[Entry[Exporter]],
    bundle: BundleManifest,
    test: _TestSplit,
    calibration_images: np.ndarray,
    calibration: calibrate.Calibration,
) -> None:
    """Write each format, load it back and check its calibrated probabilities against the Keras model's on the
    test split."""
    keras_accuracy = float((test.probabilities.argmax(axis=1) == test.labels).mean()) if len(test.labels) else 0.0
    for entry in exporters:
        exporter = entry.implementation
        path = staging / exporter.file
        quantized = getattr(exporter, "quantized", False)
        try:
            if quantized:
                cast(_QuantizedExporter, exporter).export(model, path, calibration_images=calibration_images)
            else:
                exporter.export(model, path)
            predicted = calibration.apply(test.predict(exporter.load(path)))
        except AutomlImgError as exc:
            raise _FormatFailed(entry.name, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a converter that cannot express the model
            raise _FormatFailed(entry.name, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]) from None
        difference = float(np.abs(predicted - test.probabilities).max()) if len(predicted) else 0.0
        agreement = (
            float((predicted.argmax(axis=1) == test.probabilities.argmax(axis=1)).mean()) if len(predicted) else 1.0
        )
        accuracy = float((predicted.argmax(axis=1) == test.labels).mean()) if len(predicted) else 0.0
        ok = (
            accuracy - keras_accuracy >= -QUANTIZED_MAX_ACCURACY_LOSS
            if quantized
            else agreement == 1.0 and difference < 1e-3
        )
        bundle.formats[entry.name] = FormatCheck(
            exporter.file, _size(path), len(predicted), difference, agreement, ok, accuracy, quantized
        )


def _swap_in(staging: Path, folder: Path) -> None:
    """Replace ``folder`` by the finished ``staging``: never half a bundle at ``folder``."""
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        folder.rename(retired)
        staging.rename(folder)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(folder)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _report_text(bundle: BundleManifest) -> str:
    test = bundle.test
    assert test is not None  # _write_bundle tested the bundle
    names = bundle.class_names
    width = max(len(n) for n in names) + 2
    lines = [
        f"study {bundle.study}, {members_text(bundle)} ({bundle.architecture}), "
        f"image size {bundle.image_size}" + (", refit on train+val" if bundle.refit else ""),
        f"test images: {test.images}   accuracy {test.accuracy:.4f}   balanced accuracy "
        f"{test.balanced_accuracy:.4f}   macro F1 {test.macro_f1:.4f}"
        + (f"   QWK {test.qwk:.4f}   MAE {test.mae:.4f} grades" if bundle.ordinal else ""),
        "",
        f"{'class':<{width}}precision  recall  f1      support",
    ]
    for name in names:
        row = test.per_class[name]
        lines.append(f"{name:<{width}}{row.precision:<11.3f}{row.recall:<8.3f}{row.f1:<8.3f}{row.support}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted)" + (", grades" * bundle.ordinal)]
    lines += [f"{name:<{width}}" + " ".join(f"{n:>5}" for n in row) for name, row in zip(names, test.confusion_matrix)]
    lines += ["", *(bundle.calibration.describe() if bundle.calibration else [])]
    lines += ["", "formats (checked against the Keras model on test images)"]
    for name, check in bundle.formats.items():
        lines.append(
            f"{name:<12}{check.file:<16}{check.bytes:>10} bytes   same class "
            f"{check.same_class_fraction:.3f}   max |dp| {check.max_abs_probability_difference:.2e}"
        )
    return "\n".join(lines) + "\n"


def members_text(bundle: BundleManifest) -> str:
    """Which trials the bundle holds, in words (with each one's image size when averaged)."""
    left_out = (
        (f" ({', '.join(f'#{trial}' for trial in bundle.left_out)} left out: each lowered the average's val score)")
        if bundle.left_out
        else ""
    )
    if len(bundle.members) == 1:
        return f"trial #{bundle.members[0].trial}{left_out}"
    return "average of trials " + ", ".join(f"#{m.trial} ({m.image_size} px)" for m in bundle.members) + left_out


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in (
        "automl-img",
        "tensorflow",
        "keras",
        "optuna",
        "opencv-python",
        "numpy",
        "scikit-learn",
        "tf2onnx",
        "onnxruntime",
        "ai-edge-litert",
    ):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found
