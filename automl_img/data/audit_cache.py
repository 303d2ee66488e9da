"""What an audit computed for each file, kept beside its audit.json so that the next audit of the same folder only
decodes the files that are new or changed: the hash, measures and 16 px thumbnail of each image, its pretrained
features, the label check's out-of-fold probabilities (reused while no file and no label changed) and the copies
found by alignment (reused while no file and no part changed).

A file is known by its path in the folder, its size and its modification time; an edit, a re-save or a move makes it
new. The cache is one ``.npz`` file (features as float16: 2.5 KB an image, 256 MB for 100,000; thumbnails 256
bytes), written whole at the end of an audit; a cache that cannot be read is ignored and written again.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl_img.atomic import atomic_path
from automl_img.data.imageset import ImageSet

CACHE_FILE = "audit-cache.npz"


@dataclass(frozen=True)
class ImageFacts:
    """What the duplicate and oddity checks need of one decoded image."""

    hash: tuple[int, ...]  #: the perceptual hash, as 64-bit words
    height: int
    width: int
    colour: bool
    std: float  #: grey levels, at the hash's size
    thumbnail: np.ndarray = field(compare=False)  #: 16 x 16 grayscale, uint8: how leaks' candidates are chosen


@dataclass
class AuditCache:
    """Facts and features by file key; ``keys[row]`` is the key of the set's image ``row`` (None: not readable)."""

    keys: list[str | None]
    facts: dict[str, ImageFacts] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)
    probabilities: tuple[str, np.ndarray] | None = None  #: (digest of the files and labels, out-of-fold)
    aligned: tuple[str, np.ndarray] | None = None  #: (digest of the files, parts and thresholds, pairs found aligned)

    @classmethod
    def open(cls, path: Path | None, image_set: ImageSet) -> AuditCache:
        """The cache at ``path`` (None or missing or unreadable: an empty one) for the images of ``image_set``."""
        cache = cls([_key(image_set, row) for row in range(len(image_set))])
        if path is None or not path.exists():
            return cache
        try:
            with np.load(path, allow_pickle=False) as stored:
                keys = [str(key) for key in stored["keys"]]
                rows = zip(keys, stored["hashes"], stored["measures"], stored["thumbnails"])
                for key, words, (height, width, colour, std), small in rows:
                    cache.facts[key] = ImageFacts(
                        tuple(int(w) for w in words), int(height), int(width), bool(colour), float(std), small
                    )
                feature_keys = [str(key) for key in stored["feature_keys"]]
                cache.features = dict(zip(feature_keys, stored["features"]))
                if "probabilities" in stored:
                    cache.probabilities = (str(stored["probabilities_digest"]), stored["probabilities"])
                if "aligned" in stored:
                    cache.aligned = (str(stored["aligned_digest"]), stored["aligned"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return cls(cache.keys)  # written by another version, or cut short: start again
        return cache

    def save(self, path: Path) -> None:
        """Keep what belongs to the set's current files (a removed or changed file's entry goes)."""
        current = [key for key in self.keys if key is not None]
        known = [key for key in current if key in self.facts]
        featured = [key for key in current if key in self.features]
        arrays: dict[str, Any] = {
            "keys": np.array(known, dtype=str),
            "hashes": np.array([self.facts[key].hash for key in known], dtype=np.uint64).reshape(len(known), -1),
            "measures": np.array(
                [[f.height, f.width, f.colour, f.std] for f in (self.facts[key] for key in known)], dtype=np.float64
            ).reshape(len(known), 4),
            "thumbnails": np.array([self.facts[key].thumbnail for key in known], dtype=np.uint8).reshape(
                len(known), 16, 16
            ),
            "feature_keys": np.array(featured, dtype=str),
            "features": np.array([self.features[key] for key in featured], dtype=np.float16),
        }
        if self.probabilities is not None:
            arrays["probabilities_digest"] = np.array(self.probabilities[0])
            arrays["probabilities"] = self.probabilities[1]
        if self.aligned is not None:
            arrays["aligned_digest"] = np.array(self.aligned[0])
            arrays["aligned"] = self.aligned[1]
        with atomic_path(path) as temporary, open(temporary, "wb") as file:
            np.savez(file, **arrays)

    def digest(self, rows: list[int], labels: np.ndarray) -> str:
        """What the label check's probabilities depend on: these files, in this order, with these labels (or parts:
        any numbers per file)."""
        text = "\n".join(str(self.keys[row]) for row in rows) + "\n" + ",".join(str(int(label)) for label in labels)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def features_by_row(path: Path, image_set: ImageSet) -> dict[int, np.ndarray]:
    """The features an audit cached at ``path`` for ``image_set``'s files as they are now, by row (float16)."""
    cache = AuditCache.open(path, image_set)
    return {row: cache.features[key] for row, key in enumerate(cache.keys) if key is not None and key in cache.features}


def _key(image_set: ImageSet, row: int) -> str | None:
    path = image_set.paths[row]
    try:
        stat = image_set.absolute(path).stat()
    except OSError:
        return None
    return f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}"
