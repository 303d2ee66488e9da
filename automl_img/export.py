"""export-best: the best trials, rebuilt from their stored parameters and weights, averaged, tested once, bundled."""

from __future__ import annotations

import csv
import json
import platform
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl_img.data.imageset import PARTS
from automl_img.errors import AutomlImgError, StudyError
from automl_img.plugins import Registry
from automl_img.space import StoredHyperParameters, sample_training_params
from automl_img.study.config import StudyConfig, open_data, study_dir
from automl_img.study.storage import load_study, open_storage

BUNDLE_FORMAT = 1
BUNDLE_FILE = "bundle.json"
PARITY_IMAGES = 256  # test images every exported format must classify like the Keras model
# The bundle averages this many best trials: on two Fashion-MNIST subsets, 1.1 and 2.1 points above the best alone.
DEFAULT_ENSEMBLE = 3


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    trial: FrozenTrial
    bundle: dict[str, Any]


def export_best(registry: Registry, study_name: str | None = None, storage_url: str | None = None,
                out: Path | None = None, formats: Sequence[str] = (), refit: bool = False,
                ensemble: int = DEFAULT_ENSEMBLE) -> ExportResult:
    """Rebuild the best trials' models, evaluate them once on the test split, write the bundle folder.

    Args:
        formats: extra formats besides ``keras`` (exporter plugin names), each checked against Keras.
        refit: retrain each member's configuration on train+val for the epochs its trial needed first.
        ensemble: average the probabilities of this many best trials (fewer if fewer completed; 1: the best).
    """
    if ensemble < 1:
        raise StudyError(f"--ensemble must be 1 or more (got {ensemble}); 1 exports the best trial alone")
    study = load_study(open_storage(storage_url), study_name, storage_url)
    config = StudyConfig.of(study)
    if config is None:
        raise StudyError(f"study {study.study_name!r} was not made by automl-img search (no configuration stored)")
    exporters = [registry.get("exporter", name) for name in dict.fromkeys(["keras", *formats])]
    members = best_trials(study, ensemble)
    best = members[0]
    for trial in members:
        _check_weights_are_here(study.study_name, trial, ensemble)
    from automl_img import metrics, training

    data = open_data(study.study_name, registry.get("dataset", config.dataset), config.source,
                     config.split_seed, expected_hash=config.split_hash)
    build = registry.get("architecture", config.architecture).implementation
    models = [_member_model(trial, study.study_name, config, data, build) for trial in members]
    model = training.ensemble(models)
    image_size = model.input_shape[1]
    decoded = data.cache.load(image_size, config.channels)
    images, labels = decoded.images, data.labels
    rows = {part: data.rows(part, decoded) for part in PARTS}
    val_scores = metrics.scores(labels[rows["val"]], training.predict(model, images, rows["val"]))  # before a refit
    refit_record = None
    if refit:
        models = [_member_model(trial, study.study_name, config, data, build, refit=True) for trial in members]
        model = training.ensemble(models)
        refit_record = {"epochs": [_refit_epochs(trial) for trial in members],
                        "images": int(len(rows["train"]) + len(rows["val"]))}
    test_probabilities = training.predict(model, images, rows["test"])
    bundle = {
        "format": BUNDLE_FORMAT,
        "model": exporters[0].implementation.file,
        "class_names": config.class_names,
        "preprocessing": {
            "image_size": image_size,
            "channels": config.channels,
            "color": "grayscale" if config.channels == 1 else "RGB",
            "input": f"uint8 array (batch, {image_size}, {image_size}, {config.channels}), 0-255",
            "scaling": "none outside the model: it divides by 255 itself",
            "resize": "OpenCV, stretched to a square: INTER_AREA when shrinking, INTER_LINEAR when enlarging",
        },
        "study": study.study_name,
        "trial": best.number,
        "members": [{"trial": trial.number, "value": trial.value, "image_size": member.input_shape[1],
                     "best_epoch": trial.user_attrs.get("best_epoch"), "params": trial.params}
                    for trial, member in zip(members, models)],
        "architecture": config.architecture,
        "dataset": {"loader": config.dataset, "source": config.source, "split_hash": config.split_hash,
                    "split": {part: int(len(part_rows)) for part, part_rows in rows.items()}},
        "objective": config.objective,
        "params": best.params,
        "best_epoch": best.user_attrs.get("best_epoch"),
        "refit": refit_record,
        "val_scores": val_scores,
        "val_scores_stored": best.user_attrs.get("val_scores"),
        "test": metrics.report(labels[rows["test"]], test_probabilities, config.class_names),
        "reproduce": {"search_command": best.user_attrs.get("command"), "seed": best.user_attrs.get("seed"),
                      "export_command": " ".join(sys.argv)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "created_on": {"host": socket.gethostname(), "python": platform.python_version(), **_library_versions()},
    }
    test_files = [str(data.split.image_set.absolute(data.split.image_set.paths[row])) for row in rows["test"]]
    folder = Path(out) if out else study_dir(study.study_name) / "export"
    _write_bundle(folder, model, exporters, bundle, images[rows["test"][:PARITY_IMAGES]],
                  list(zip(test_files, labels[rows["test"]], test_probabilities)))
    return ExportResult(folder, best, bundle)


def _member_model(trial: FrozenTrial, study_name: str, config: StudyConfig, data, build, refit: bool = False):
    """The trial's model with its best epoch's weights, or retrained on train+val for as many epochs."""
    from automl_img import training

    hp = StoredHyperParameters(trial.params)
    params = sample_training_params(hp, config.image_sizes)
    training.keras.utils.set_random_seed(int(trial.user_attrs.get("seed", 0)))  # a refit starts as the trial did
    model = training.build_model(build, hp, params.image_size, config.channels, len(config.class_names),
                                 params.learning_rate if refit else None, name=f"trial_{trial.number}")
    if not refit:
        model.load_weights(study_dir(study_name) / trial.user_attrs["weights"])
        return model
    decoded = data.cache.load(params.image_size, config.channels)
    train, val = data.rows("train", decoded), data.rows("val", decoded)
    training.refit(model, decoded.images, data.labels, np.concatenate([train, val]), params, _refit_epochs(trial),
                   config.class_weights(data.labels, train))
    return model


def _refit_epochs(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get("best_epoch") or 1)


def best_trials(study, count: int) -> list[FrozenTrial]:
    """The ``count`` best completed trials, best first."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        others = study.get_trials(deepcopy=False)
        pruned = sum(t.state == TrialState.PRUNED for t in others)
        failed = sum(t.state == TrialState.FAIL for t in others)
        raise StudyError(
            f"study {study.study_name!r} has no completed trial yet ({pruned} pruned, {failed} failed); "
            "run `automl-img search` with the same data and --study to add trials, then export again"
        )
    maximize = study.direction == StudyDirection.MAXIMIZE
    ranked = sorted(completed, key=lambda t: (-t.value if maximize else t.value, t.number))
    return ranked[:count]


def _check_weights_are_here(study_name: str, trial: FrozenTrial, ensemble: int) -> None:
    weights = study_dir(study_name) / trial.user_attrs["weights"]
    if not weights.exists():
        host = trial.user_attrs.get("worker", {}).get("host", "another machine")
        alone = " (or export fewer trials with --ensemble)" if ensemble > 1 else ""
        raise StudyError(
            f"the weights of trial #{trial.number} are not here ({weights}); it ran on {host}: run "
            f"export-best there, or copy its studies/{study_name}/trials/{trial.number}/ folder here{alone}"
        )


def _write_bundle(folder: Path, model, exporters, bundle: dict[str, Any], parity_images: np.ndarray,
                  test_predictions: list) -> None:
    """Write the whole bundle beside the target, then swap it in: never half a bundle at ``folder``."""
    folder = folder.resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    reference = np.asarray(model.predict(parity_images, verbose=0))
    bundle["formats"] = {}
    for exporter in exporters:
        path = staging / exporter.implementation.file
        try:
            exporter.implementation.export(model, path)
        except AutomlImgError:
            raise
        except Exception as exc:  # a converter that cannot express the model
            shutil.rmtree(staging, ignore_errors=True)
            sizes = sorted({member["image_size"] for member in bundle["members"]})
            hint = (f"; the averaged trials use image sizes {sizes}, and resizing inside the model may be "
                    "beyond this format: export with --ensemble 1" if len(sizes) > 1 else "")
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise AutomlImgError(f"cannot write the {exporter.name} format: {first_line}{hint}") from None
        predicted = exporter.implementation.load(path)(np.ascontiguousarray(parity_images))
        difference = float(np.abs(predicted - reference).max())
        agreement = float((predicted.argmax(axis=1) == reference.argmax(axis=1)).mean())
        bundle["formats"][exporter.name] = {
            "file": exporter.implementation.file, "bytes": _size(path), "checked_on_test_images": int(len(parity_images)),
            "max_abs_probability_difference": difference, "same_class_fraction": agreement,
            "ok": agreement == 1.0 and difference < 1e-3,
        }
    (staging / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2, default=str), encoding="utf-8")
    (staging / "report.txt").write_text(_report_text(bundle), encoding="utf-8")
    with open(staging / "test_predictions.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "true_class", "predicted_class", "probability"])
        names = bundle["class_names"]
        for path, label, row in test_predictions:
            writer.writerow([path, names[label], names[int(row.argmax())], f"{row.max():.6f}"])
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


def _report_text(bundle: dict[str, Any]) -> str:
    test = bundle["test"]
    names = bundle["class_names"]
    width = max(len(n) for n in names) + 2
    lines = [
        f"study {bundle['study']}, {_members_text(bundle)} ({bundle['architecture']}), "
        f"image size {bundle['preprocessing']['image_size']}" + (", refit on train+val" if bundle["refit"] else ""),
        f"test images: {test['images']}   accuracy {test['accuracy']:.4f}   balanced accuracy "
        f"{test['balanced_accuracy']:.4f}   macro F1 {test['macro_f1']:.4f}",
        "",
        f"{'class':<{width}}precision  recall  f1      support",
    ]
    for name in names:
        row = test["per_class"][name]
        lines.append(f"{name:<{width}}{row['precision']:<11.3f}{row['recall']:<8.3f}{row['f1']:<8.3f}{row['support']}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    lines += [f"{name:<{width}}" + " ".join(f"{n:>5}" for n in row) for name, row in zip(names, test["confusion_matrix"])]
    lines += ["", "formats (checked against the Keras model on test images)"]
    for name, check in bundle["formats"].items():
        lines.append(f"{name:<12}{check['file']:<16}{check['bytes']:>10} bytes   same class "
                     f"{check['same_class_fraction']:.3f}   max |dp| {check['max_abs_probability_difference']:.2e}")
    return "\n".join(lines) + "\n"


def _members_text(bundle: dict[str, Any]) -> str:
    members = bundle["members"]
    if len(members) == 1:
        return f"trial #{members[0]['trial']}"
    return "average of trials " + ", ".join(f"#{m['trial']} ({m['image_size']} px)" for m in members)


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("automl-img", "tensorflow", "keras", "optuna", "opencv-python", "numpy", "scikit-learn",
                 "tf2onnx", "onnxruntime", "ai-edge-litert"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
