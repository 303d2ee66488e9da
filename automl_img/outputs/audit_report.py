"""The audit of a data folder as the command and the Python API run it: listed like a search lists it, audited,
written as JSON and an exclusions file beside the studies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from automl_img.data.audit import AuditReport, audit
from automl_img.data.imageset import ImageSet
from automl_img.errors import StudyError
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


def run_audit(registry: Registry, source: str | None, dataset: str = "folder", out: Path | None = None) -> AuditResult:
    """List the folder as the search would (same loader, same messages for a bad path or an empty class), audit
    every image, write ``audit.json`` and ``exclusions.txt`` (default: studies/NAME/audit/)."""
    loader = registry.get("dataset", dataset)
    image_set = loader.implementation(source)
    if not isinstance(image_set, ImageSet):
        raise StudyError(f"dataset loader {dataset!r} returned {type(image_set).__name__}, not an ImageSet")
    image_set.check_usable()
    report = audit(image_set)
    folder = Path(out) if out else study_dir(default_study_name(dataset, source)) / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / AUDIT_FILE).write_text(report.to_json(), encoding="utf-8")
    report.write_exclusions(folder / EXCLUSIONS_FILE)
    return AuditResult(folder, report, source)
