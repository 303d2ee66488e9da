"""Decode once per (dataset content, image size, channels); keep the uint8 result memory-mapped on disk."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from automl_img.atomic import atomic_path, atomic_write_text
from automl_img.data.decode import DECODE_VERSION, UnreadableImage, load_image
from automl_img.data.imageset import ImageSet

Progress = Callable[[int, int], None]  # (images done, images in all)
_CHUNK = 256


@dataclass(frozen=True)
class DecodedImages:
    """Every image of a set at one size; rows of unreadable files are zeros and listed."""

    images: np.ndarray  # (N, size, size, channels) uint8, read-only memory map
    unreadable: dict[int, str]  # row -> why OpenCV could not read the file

    @property
    def readable(self) -> np.ndarray:
        mask = np.ones(len(self.images), dtype=bool)
        mask[list(self.unreadable)] = False
        return mask


class ImageCache:
    """Decoded arrays for one image set, stored under ``folder`` and shared by every trial and run."""

    def __init__(self, folder: Path, image_set: ImageSet, workers: int | None = None):
        self.folder = Path(folder)
        self.image_set = image_set
        self.workers = workers or os.cpu_count() or 1
        self._fingerprint: str | None = None
        self._loaded: dict[tuple[int, int], DecodedImages] = {}

    @property
    def fingerprint(self) -> str:
        """Changes when a file is added, removed, renamed or modified (size or mtime), or decoding changes."""
        if self._fingerprint is None:
            digest = hashlib.sha256(f"decode {DECODE_VERSION}\n".encode())
            root = str(self.image_set.root)  # plain strings: half the time of pathlib on 100,000 files
            for path in self.image_set.paths:
                try:
                    stat = os.stat(os.path.join(root, path))
                    digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                except OSError:
                    digest.update(f"{path}\0missing\n".encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def path_for(self, image_size: int, channels: int) -> Path:
        return self.folder / f"{self.fingerprint}-{image_size}px-{channels}ch.npy"

    def load(self, image_size: int, channels: int, progress: Progress | None = None) -> DecodedImages:
        """The decoded set at this size, decoding it first (in parallel) when no run has yet."""
        key = (image_size, channels)
        if key not in self._loaded:
            self._loaded[key] = self._load_or_build(image_size, channels, progress)
        return self._loaded[key]

    def _load_or_build(self, image_size: int, channels: int, progress: Progress | None) -> DecodedImages:
        target = self.path_for(image_size, channels)
        report = target.with_suffix(".unreadable.json")
        self.folder.mkdir(parents=True, exist_ok=True)
        # One builder at a time per array; a second worker waits and then reads the result.
        with open(target.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (target.exists() and report.exists()):
                self._build(target, report, image_size, channels, progress)
        unreadable = {int(row): reason for row, reason in json.loads(report.read_text()).items()}
        return DecodedImages(np.load(target, mmap_mode="r"), unreadable)

    def _build(self, target: Path, report: Path, image_size: int, channels: int, progress: Progress | None) -> None:
        with atomic_path(target) as partial:
            unreadable = self._decode_into(partial, image_size, channels, progress)
            # The report lands before the array is renamed into place: an array never looks
            # complete without its list of unreadable files.
            atomic_write_text(report, json.dumps({str(k): v for k, v in sorted(unreadable.items())}))

    def _decode_into(self, partial: Path, image_size: int, channels: int, progress: Progress | None) -> dict[int, str]:
        total = len(self.image_set)
        shape = (total, image_size, image_size, channels)
        images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        unreadable: dict[int, str] = {}

        def decode(start: int) -> int:
            stop = min(start + _CHUNK, total)
            for row in range(start, stop):
                path = self.image_set.absolute(self.image_set.paths[row])
                try:
                    images[row] = load_image(path, image_size, channels)
                except UnreadableImage as exc:
                    unreadable[row] = str(exc)
            return stop - start

        done = 0
        with ThreadPoolExecutor(self.workers) as pool:  # OpenCV releases the GIL while decoding
            for count in pool.map(decode, range(0, total, _CHUNK)):
                done += count
                if progress:
                    progress(done, total)
        images.flush()
        return unreadable
