"""The study's fixed, stratified train/val/test split, stored with the study."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl_img.atomic import atomic_write_text
from automl_img.data.imageset import PARTS, ImageSet
from automl_img.errors import DataError

VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


@dataclass(frozen=True)
class Split:
    """An image set with every image assigned to train, val or test."""

    image_set: ImageSet
    parts: np.ndarray  # index into PARTS per image
    seed: int

    def indices(self, part: str) -> np.ndarray:
        return np.flatnonzero(self.parts == PARTS.index(part))

    @property
    def hash(self) -> str:
        """Identifies the split's content; workers on other machines compare it before joining."""
        digest = hashlib.sha256()
        for path, label, part in zip(self.image_set.paths, self.image_set.labels.tolist(), self.parts.tolist()):
            digest.update(f"{path}\0{label}\0{part}\n".encode())
        digest.update("\0".join(self.image_set.class_names).encode())
        return digest.hexdigest()[:16]

    def counts(self) -> dict[str, int]:
        return {part: int((self.parts == i).sum()) for i, part in enumerate(PARTS)}

    def save(self, path: Path) -> None:
        rows = [
            [p, int(label), PARTS[part]]
            for p, label, part in zip(self.image_set.paths, self.image_set.labels, self.parts)
        ]
        manifest = {
            "seed": self.seed,
            "hash": self.hash,
            "class_names": list(self.image_set.class_names),
            "files": rows,
        }
        atomic_write_text(path, json.dumps(manifest, indent=0))

    @classmethod
    def load(cls, path: Path, root: Path) -> Split:
        """The stored split, with its files found under ``root`` (the data may have moved)."""
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = manifest["files"]
        image_set = ImageSet(
            root=Path(root),
            paths=tuple(row[0] for row in rows),
            labels=np.array([row[1] for row in rows], dtype=np.int64),
            class_names=tuple(manifest["class_names"]),
        )
        parts = np.array([PARTS.index(row[2]) for row in rows], dtype=np.int8)
        return cls(image_set, parts, manifest["seed"])


def make_split(image_set: ImageSet, seed: int) -> Split:
    """Split stratified by class with a fixed seed; a pre-split set keeps its parts, gaps filled from train."""
    if image_set.parts is None:
        _require_images_per_class(image_set, np.arange(len(image_set)), 3, "for a train/val/test split")
        parts = np.zeros(len(image_set), dtype=np.int8)
        _carve(image_set.labels, np.arange(len(image_set)), parts, seed, {"val": VAL_FRACTION, "test": TEST_FRACTION})
        return Split(image_set, parts, seed)
    parts = np.array([PARTS.index(p) for p in image_set.parts], dtype=np.int8)
    missing = [part for part in ("val", "test") if not (parts == PARTS.index(part)).any()]
    if missing:
        train = np.flatnonzero(parts == 0)
        _require_images_per_class(image_set, train, 1 + len(missing), f"in train/ to carve out {' and '.join(missing)}")
        fractions = {"val": VAL_FRACTION, "test": TEST_FRACTION}
        _carve(image_set.labels, train, parts, seed, {part: fractions[part] for part in missing})
    if not (parts == 0).any():
        raise DataError(f"{image_set.root}/train has no images")
    return Split(image_set, parts, seed)


def _carve(labels: np.ndarray, pool: np.ndarray, parts: np.ndarray, seed: int, fractions: dict[str, float]) -> None:
    """Move a fraction of each class in ``pool`` to each named part, at least one image each."""
    rng = np.random.default_rng(seed)
    for label in np.unique(labels[pool]):
        members = rng.permutation(pool[labels[pool] == label])
        start = 0
        for part, fraction in fractions.items():
            count = max(1, int(round(len(members) * fraction)))  # noqa: RUF046 - a numpy fraction: int before NumPy 2
            parts[members[start : start + count]] = PARTS.index(part)
            start += count


def _require_images_per_class(image_set: ImageSet, pool: np.ndarray, minimum: int, purpose: str) -> None:
    counts = np.bincount(image_set.labels[pool], minlength=len(image_set.class_names))
    short = [f"{image_set.class_names[i]} ({n})" for i, n in enumerate(counts) if n < minimum]
    if short:
        raise DataError(
            f"too few images {purpose}: each class needs at least {minimum}, but "
            f"{', '.join(short)} {'has' if len(short) == 1 else 'have'} fewer; add images or remove the class folder"
        )
