"""An image set: which files, which labels, which class names; nothing is decoded here."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from automl_img.data.dicom import is_dicom
from automl_img.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".bmp",
        ".tif",
        ".tiff",
        ".webp",
        ".pbm",
        ".pgm",
        ".ppm",
        ".pnm",
        ".dcm",
        ".dicom",
    }
)
PARTS = ("train", "val", "test")
_PART_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
# Files that operating systems and tools leave behind; not worth a report line.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})  # Windows' folder metadata
_HIDDEN = "hidden or system file (.DS_Store, ._name, Thumbs.db...)"


def read_exclusions(path: str | os.PathLike) -> list[str]:
    """The paths of an exclusions file (``automl-img audit`` writes one): one per line, relative to the data
    folder; lines starting with "#" and anything after "  #" are comments."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read the exclusions file {path}: {exc.strerror or exc}") from None
    lines = (line.split("  #", 1)[0].strip() for line in text.splitlines() if not line.lstrip().startswith("#"))
    return [line for line in lines if line]


def all_numbered(class_names: Sequence[str]) -> bool:
    """Whether every class name is or starts with a whole number: grades, likely."""
    return len(class_names) > 2 and all(re.match(r"\d+", name) for name in class_names)


def _numbered_order(class_names: Sequence[str]) -> list[str]:
    if not all_numbered(class_names):
        raise DataError(
            f"the class names ({', '.join(class_names)}) do not say an order; give it lowest grade first, "
            "e.g. --class-order " + ",".join(class_names)
        )
    numbers = [int(re.match(r"\d+", name).group()) for name in class_names]  # type: ignore[union-attr]
    if len(set(numbers)) != len(numbers):
        raise DataError(f"two class names start with the same number ({', '.join(class_names)}); give --class-order")
    return [name for _, name in sorted(zip(numbers, class_names))]


def _hidden(name: str) -> bool:
    """Dot files (macOS' .DS_Store and ._name metadata among them) and Windows' folder files."""
    return name.startswith(".") or name.lower() in _SYSTEM_FILES


@dataclass(frozen=True)
class ImageSet:
    """Labelled image files.

    Args:
        root: the folder ``paths`` are relative to, so a study survives a move of the data.
        paths: one path per image, relative to ``root`` (or absolute).
        labels: one class index per image.
        class_names: the name of each class index.
        parts: ``"train"``/``"val"``/``"test"`` per image when the data came already split.
        skipped: ``(path, reason)`` for files the loader passed over.
    """

    root: Path
    paths: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    parts: tuple[str, ...] | None = None
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def from_labelled_files(
        cls,
        root: str | os.PathLike,
        files: Iterable[tuple[str, str] | tuple[str, str, str]],
        skipped: Iterable[tuple[str, str]] = (),
    ) -> ImageSet:
        """Build from ``(path, class_name)`` or ``(path, class_name, part)`` rows; classes sort by name."""
        rows = sorted(files)
        class_names = tuple(sorted({row[1] for row in rows}))
        index = {name: i for i, name in enumerate(class_names)}
        has_parts = bool(rows) and len(rows[0]) == 3
        if any((len(row) == 3) != has_parts for row in rows):
            raise DataError("either every image or none must say which split part it belongs to")
        parts = None
        if has_parts:
            # every row has its part third (checked above); the length test only narrows the row's type
            parts = tuple(_PART_ALIASES.get(row[2], row[2]) for row in rows if len(row) == 3)
            unknown = set(parts) - set(PARTS)
            if unknown:
                raise DataError(f"unknown split part {sorted(unknown)[0]!r}; use train, val or test")
        return cls(
            root=Path(root),
            paths=tuple(row[0] for row in rows),
            labels=np.array([index[row[1]] for row in rows], dtype=np.int64),
            class_names=class_names,
            parts=parts,
            skipped=tuple(skipped),
        )

    def __len__(self) -> int:
        return len(self.paths)

    def without(self, paths: Sequence[str]) -> ImageSet:
        """The same set less the files named (paths relative to ``root``, as ``paths`` holds them)."""
        left_out = set(paths)
        kept = [row for row, path in enumerate(self.paths) if path not in left_out]
        return dataclasses.replace(
            self,
            paths=tuple(self.paths[row] for row in kept),
            labels=self.labels[kept],
            parts=tuple(self.parts[row] for row in kept) if self.parts else None,
        )

    def in_grade_order(self, given: Sequence[str] | None = None) -> ImageSet:
        """The same images with their classes as ordered grades, lowest first: in the ``given`` order, else by
        the whole number each class name is or starts with ("0".."4", "1_mild"); labels follow."""
        order = list(given) if given else _numbered_order(self.class_names)
        missing = [name for name in order if name not in self.class_names]
        if missing:
            raise DataError(
                f"the class order names {', '.join(map(repr, missing))}, which "
                f"{'is not a class' if len(missing) == 1 else 'are not classes'} here; "
                f"the classes are {', '.join(self.class_names)}"
            )
        left_out = [name for name in self.class_names if name not in order]
        if left_out or len(set(order)) != len(order):
            raise DataError(
                f"the class order must name every class once; it leaves out {', '.join(left_out)}"
                if left_out
                else f"the class order names a class twice: {', '.join(order)}"
            )
        remap = np.array([order.index(name) for name in self.class_names], dtype=np.int64)
        return dataclasses.replace(self, labels=remap[self.labels], class_names=tuple(order))

    def absolute(self, path: str) -> Path:
        return self.root / path

    def check_usable(self) -> None:
        """Refuse sets a classifier cannot be trained on, naming the problem."""
        if len(self) == 0:
            raise DataError(f"no images found under {self.root}")
        if len(self.class_names) < 2:
            only = self.class_names[0] if self.class_names else "none"
            raise DataError(
                f"found a single class ({only}) under {self.root}; a classifier needs at least two "
                "class folders, one per label"
            )


def list_image_folder(root: str | os.PathLike) -> ImageSet:
    """List a class-per-folder tree, or ``train/val/test`` folders each holding class folders."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root} does not exist; give the folder that holds one sub-folder per class")
    if not root.is_dir():
        raise DataError(f"{root} is a file; give the folder that holds one sub-folder per class")
    top = _subfolders(root)
    part_folders = {_PART_ALIASES[p.name.lower()]: p for p in top if p.name.lower() in _PART_ALIASES}
    pre_split = "train" in part_folders and len(part_folders) >= 2
    rows: list[tuple[str, str] | tuple[str, str, str]] = []
    skipped: list[tuple[str, str]] = []
    if pre_split:
        for part, folder in part_folders.items():
            for class_dir in _subfolders(folder):
                found = _collect(root, class_dir, skipped)
                rows += [(path, class_dir.name, part) for path in found]
        for other in sorted(set(top) - set(part_folders.values())):
            skipped.append((other.name + "/", "not a train/val/test folder"))
    else:
        for class_dir in top:
            rows += [(path, class_dir.name) for path in _collect(root, class_dir, skipped)]
    for entry in sorted(root.iterdir()):
        if entry.is_file():
            skipped.append((entry.name, _HIDDEN if _hidden(entry.name) else "not inside a class folder"))
        elif entry.name.startswith("."):
            skipped.append((entry.name + "/", "hidden folder, not searched"))
    image_set = ImageSet.from_labelled_files(root, rows, skipped)
    image_set.check_usable()
    return image_set


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _collect(root: Path, class_dir: Path, skipped: list[tuple[str, str]]) -> list[str]:
    """Image files under one class folder, nested folders and symlinks included, loops refused."""
    found: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        for hidden in sorted(d for d in dirnames if d.startswith(".")):
            skipped.append(((Path(dirpath) / hidden).relative_to(root).as_posix() + "/", "hidden folder, not searched"))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if _hidden(name):
                skipped.append((rel, _HIDDEN))
            elif not is_image_path(full):
                skipped.append((rel, "not an image file extension"))
            elif not full.is_file():
                skipped.append((rel, "broken link"))
            else:
                found.append(rel)
    if not found:
        skipped.append((class_dir.relative_to(root).as_posix() + "/", "empty class folder, left out"))
    return found


def is_image_path(path: Path) -> bool:
    """An image file extension, or a DICOM file named as PACS exports name them: no extension (IM0001) or a UID
    (1.2.840.113619.2.55.3.12)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return True
    if suffix and not suffix[1:].isdigit():
        return False
    try:
        with open(path, "rb") as handle:
            return is_dicom(handle.read(132))
    except OSError:
        return False
