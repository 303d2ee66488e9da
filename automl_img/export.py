"""export-best: the best trial, rebuilt from its stored parameters and weights, tested once, bundled."""

from __future__ import annotations

import json
import platform
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from automl_img.data.imageset import PARTS
from automl_img.errors import StudyError
from automl_img.plugins import Registry
from automl_img.space import StoredHyperParameters, sample_training_params
from automl_img.study.config import StudyConfig, open_data, study_dir
from automl_img.study.storage import load_study, open_storage

BUNDLE_FORMAT = 1
MODEL_FILE = "model.keras"
BUNDLE_FILE = "bundle.json"


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    trial: FrozenTrial
    bundle: dict[str, Any]


def export_best(registry: Registry, study_name: str | None = None, storage_url: str | None = None,
                out: Path | None = None) -> ExportResult:
    """Rebuild the best trial's model, evaluate it once on the test split, write the bundle folder."""
    study = load_study(open_storage(storage_url), study_name, storage_url)
    config = StudyConfig.of(study)
    if config is None:
        raise StudyError(f"study {study.study_name!r} was not made by automl-img search (no configuration stored)")
    best = _best_trial(study)
    weights = study_dir(study.study_name) / best.user_attrs["weights"]
    if not weights.exists():
        host = best.user_attrs.get("worker", {}).get("host", "another machine")
        raise StudyError(
            f"the weights of best trial #{best.number} are not here ({weights}); it ran on {host}: run "
            f"export-best there, or copy its studies/{study.study_name}/trials/{best.number}/ folder here"
        )
    from automl_img import metrics, training

    data = open_data(study.study_name, registry.get("dataset", config.dataset), config.source,
                     config.split_seed, expected_hash=config.split_hash)
    hp = StoredHyperParameters(best.params)
    params = sample_training_params(hp, config.image_sizes)
    architecture = registry.get("architecture", config.architecture)
    model = training.build_model(architecture.obj, hp, params.image_size, config.channels, len(config.class_names))
    model.load_weights(weights)
    decoded = data.cache.load(params.image_size, config.channels)
    labels = data.labels
    val_rows, test_rows = data.rows("val", decoded), data.rows("test", decoded)
    val_scores = metrics.scores(labels[val_rows], training.predict(model, decoded.images, val_rows))
    test_report = metrics.report(labels[test_rows], training.predict(model, decoded.images, test_rows),
                                 config.class_names)
    bundle = {
        "format": BUNDLE_FORMAT,
        "model": MODEL_FILE,
        "class_names": config.class_names,
        "preprocessing": {
            "image_size": params.image_size,
            "channels": config.channels,
            "color": "grayscale" if config.channels == 1 else "RGB",
            "input": f"uint8 array (batch, {params.image_size}, {params.image_size}, {config.channels}), 0-255",
            "scaling": "none outside the model: it divides by 255 itself",
            "resize": "OpenCV, stretched to a square: INTER_AREA when shrinking, INTER_LINEAR when enlarging",
        },
        "study": study.study_name,
        "trial": best.number,
        "architecture": config.architecture,
        "dataset": {"loader": config.dataset, "source": config.source, "split_hash": config.split_hash,
                    "split": {part: int(len(data.rows(part, decoded))) for part in PARTS}},
        "objective": config.objective,
        "params": best.params,
        "best_epoch": best.user_attrs.get("best_epoch"),
        "val_scores": val_scores,
        "val_scores_stored": best.user_attrs.get("val_scores"),
        "test": test_report,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "created_on": {"host": socket.gethostname(), "python": platform.python_version(),
                       **_library_versions()},
    }
    folder = Path(out) if out else study_dir(study.study_name) / "export"
    _write_bundle(folder, model, bundle)
    return ExportResult(folder, best, bundle)


def _best_trial(study) -> FrozenTrial:
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        others = study.get_trials(deepcopy=False)
        pruned = sum(t.state == TrialState.PRUNED for t in others)
        failed = sum(t.state == TrialState.FAIL for t in others)
        raise StudyError(
            f"study {study.study_name!r} has no completed trial yet ({pruned} pruned, {failed} failed); "
            "run `automl-img search` with the same data and --study to add trials, then export again"
        )
    return study.best_trial


def _write_bundle(folder: Path, model, bundle: dict[str, Any]) -> None:
    """Write the whole bundle beside the target, then swap it in: never half a bundle at ``folder``."""
    folder = folder.resolve()
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    model.save(staging / MODEL_FILE)
    (staging / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2, default=str), encoding="utf-8")
    (staging / "report.txt").write_text(_report_text(bundle), encoding="utf-8")
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        folder.rename(retired)
        staging.rename(folder)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(folder)


def _report_text(bundle: dict[str, Any]) -> str:
    test = bundle["test"]
    names = bundle["class_names"]
    width = max(len(n) for n in names) + 2
    lines = [
        f"study {bundle['study']}, trial #{bundle['trial']} ({bundle['architecture']}), "
        f"image size {bundle['preprocessing']['image_size']}",
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
    return "\n".join(lines) + "\n"


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("automl-img", "tensorflow", "keras", "optuna", "opencv-python", "numpy", "scikit-learn"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
