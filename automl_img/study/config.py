"""What a study is: its stored configuration, and the data (split + cache) every worker must agree on."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import optuna

from automl_img.data import DecodedImages, ImageCache, ImageSet, Split, make_split
from automl_img.data.audit import ExactCopies
from automl_img.errors import StudyError
from automl_img.hookspecs import DatasetLoader
from automl_img.models import families
from automl_img.models.families import Families, Family
from automl_img.plugins import Entry, Registry
from automl_img.study.storage import studies_dir

CONFIG_ATTR = "automl_img_config"
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class StudyConfig:
    """Fixed when a study is created; stored in the study so every resumed run and worker uses it."""

    dataset: str
    source: str | None
    architecture: str
    objective: str
    channels: int
    image_sizes: list[int]
    split_seed: int
    split_hash: str
    class_names: list[str]
    balance_classes: bool = False  # weight the loss by inverse class frequency
    # Several architectures (``architecture`` is "a,b"): each one's candidate sizes; image_sizes are the first's.
    family_image_sizes: dict[str, list[int]] | None = None
    artifacts: str | None = None  # where trials upload their weights (a folder or s3://BUCKET); None: studies/ only
    ordinal: bool = False  # the classes are grades, class_names lowest first
    excluded: list[str] = field(default_factory=list)  # files of the folder left out (search --exclude)

    def families(self, registry: Registry) -> Families:
        """The architecture(s) this study searches, as its trials build them."""
        found = families.names(self.architecture)
        sizes = self.family_image_sizes or {found[0]: self.image_sizes}
        return Families(
            [
                Family(name, registry.architecture(name), sizes[name], families.size_parameter(name, sizes))
                for name in found
            ]
        )

    def class_weights(self, labels: np.ndarray, train_rows: np.ndarray) -> dict[int, float] | None:
        """Keras class weights (``n / (classes * count)``) when the study balances classes, else None."""
        if not self.balance_classes:
            return None
        counts = np.bincount(labels[train_rows], minlength=len(self.class_names))
        return {c: float(len(train_rows) / (len(counts) * n)) for c, n in enumerate(counts) if n > 0}

    def save(self, study: optuna.Study) -> None:
        study.set_user_attr(CONFIG_ATTR, asdict(self))

    @classmethod
    def of(cls, study: optuna.Study) -> StudyConfig | None:
        stored = study.user_attrs.get(CONFIG_ATTR)
        if stored is None:
            return None
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in names})

    def check_same_search(self, study_name: str, **asked: object) -> None:
        """Refuse to resume with a different dataset, architecture or objective."""
        for name, value in asked.items():
            stored = getattr(self, name)
            if value is not None and value != stored:
                raise StudyError(
                    f"study {study_name!r} was created with {name} {stored!r}, not {value!r}; "
                    f"rerun with the original value or start a new study with --study NEW_NAME"
                )


def default_study_name(dataset: str, source: str | None) -> str:
    """The data folder's name (or the demo dataset's), safe as a folder name."""
    base = Path(source).expanduser().resolve().name if source else dataset
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or dataset


def study_dir(study_name: str) -> Path:
    return studies_dir() / study_name


def audit_dir(dataset: str, source: str | None) -> Path:
    """Where ``automl-img audit`` keeps a folder's report and cache by default (a search reads its features)."""
    return study_dir(default_study_name(dataset, source)) / "audit"


@dataclass
class StudyData:
    """The study's split of the images and the per-size cache of their pixels."""

    split: Split
    cache: ImageCache
    loader_skipped: tuple[tuple[str, str], ...] = ()
    not_in_split: int = 0  # files present now that the stored split predates
    exact_copies: ExactCopies | None = None  # checked when the study is created

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.split.image_set.class_names

    @property
    def labels(self) -> np.ndarray:
        return self.split.image_set.labels

    def rows(self, part: str, decoded: DecodedImages) -> np.ndarray:
        """Rows of one part whose files could be decoded."""
        rows = self.split.indices(part)
        return rows[decoded.readable[rows]]

    def unreadable_files(self, decoded: DecodedImages) -> list[tuple[str, str]]:
        return [(self.split.image_set.paths[row], reason) for row, reason in sorted(decoded.unreadable.items())]


def open_data(
    study_name: str,
    loader: Entry[DatasetLoader],
    source: str | None,
    split_seed: int,
    expected_hash: str | None = None,
    grades: list[str] | None = None,
    excluded: Sequence[str] = (),
) -> StudyData:
    """List the images, then use the stored split (or make and store it on the study's first run).

    ``grades``: a new study's classes are ordered grades, in this order (empty: by the numbers in their names).
    ``excluded``: files to leave out, relative to the data folder.
    """
    image_set: ImageSet = loader.implementation(source)
    if not isinstance(image_set, ImageSet):
        raise StudyError(
            f"dataset loader {loader.name!r} ({loader.source}) returned {type(image_set).__name__}, not an ImageSet"
        )
    image_set = image_set.without(excluded) if excluded else image_set
    image_set.check_usable()
    if grades is not None:
        image_set = image_set.in_grade_order(grades)
    manifest = study_dir(study_name) / SPLIT_FILE
    if manifest.exists():
        split = Split.load(manifest, root=image_set.root)
        not_in_split = len(set(image_set.paths) - set(split.image_set.paths))
    else:
        split = make_split(image_set, split_seed)
        not_in_split = 0
    if expected_hash is not None and split.hash != expected_hash:
        raise StudyError(
            f"the images under {image_set.root} are not the ones study {study_name!r} was split from "
            f"({len(image_set)} files here); give the same data, or start a new study with --study NEW_NAME"
        )
    if not manifest.exists():
        split.save(manifest)
    cache = ImageCache(studies_dir() / "cache", split.image_set)
    return StudyData(split, cache, image_set.skipped, not_in_split)


def imbalance(labels: np.ndarray, train_rows: np.ndarray) -> float:
    """Largest over smallest class count in the train split."""
    counts = np.bincount(labels[train_rows])
    counts = counts[counts > 0]
    return float(counts.max() / counts.min()) if len(counts) else 1.0


def describe_skips(items: list[tuple[str, str]], limit: int = 5) -> str:
    """``3 files: a.png (reason), b.png (reason), ...`` for one-line reports; hidden files (.DS_Store) last."""
    items = sorted(items, key=lambda item: item[1].startswith("hidden"))
    shown = ", ".join(f"{path} ({reason})" for path, reason in items[:limit])
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    return f"{len(items)} file{'s' if len(items) != 1 else ''}: {shown}{more}"
