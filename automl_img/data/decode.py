"""Decoding one image file with OpenCV into the uint8 RGB (or grayscale) array a model sees."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Bad files are reported by name at the end; OpenCV's own per-file warnings would only add noise.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

import cv2
import numpy as np

from automl_img.data.dicom import DicomError, is_dicom, read_dicom, window

# Part of every cache file's name: pixels decoded by an older version are decoded again. 2: DICOM, and
# high-bit-depth grayscale through a percentile window instead of a cut to the depth's full range.
DECODE_VERSION = 2
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})

# JPEG decoding honours EXIF orientation only without IMREAD_UNCHANGED; formats that can carry
# alpha or 16-bit depth are read unchanged so neither is lost before we convert it ourselves.
_UNCHANGED_EXTENSIONS = frozenset({".png", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"})


class UnreadableImage(Exception):
    """OpenCV could not make an image of this file."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode a file to uint8, channels-last: (H, W, 1) grayscale or (H, W, 3) RGB."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)  # fromfile + imdecode copes with non-ASCII names
    except OSError as exc:
        raise UnreadableImage(f"cannot open: {exc.strerror or exc}") from None
    if data.size == 0:
        raise UnreadableImage("empty file")
    if path.suffix.lower() in DICOM_EXTENSIONS or is_dicom(data[:132].tobytes()):
        try:
            return read_dicom(data.tobytes())
        except DicomError as exc:
            raise UnreadableImage(str(exc)) from None
    flags = (
        cv2.IMREAD_UNCHANGED
        if path.suffix.lower() in _UNCHANGED_EXTENSIONS
        else (cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    )
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as exc:  # e.g. more pixels than OpenCV's safety limit
        raise UnreadableImage(f"OpenCV refused it: {exc.err or exc}") from None
    if image is None or image.size == 0:
        raise UnreadableImage("not a readable image (corrupt, truncated or unsupported format)")
    return to_rgb_uint8(image, bgr=True)


def to_rgb_uint8(image: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Any depth, 1 to 4 channels -> uint8 (H, W, 1) or RGB (H, W, 3); alpha is composited on white.
    Grayscale of more than 8 bits (16-bit X-rays) goes through the percentile ``window``, as DICOM does.

    Args:
        bgr: colour channels in OpenCV's order (files); numpy arrays and PIL images are RGB.
    """
    if image.dtype.kind in "iu" and image.dtype.itemsize > 1 and (image.ndim == 2 or image.shape[2] == 1):
        return window(image.reshape(image.shape[:2]))[:, :, None]
    image = _to_uint8(image)
    if image.ndim == 2:
        return image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        return image
    if channels == 4:
        # Transparent pixels are shown on white by every viewer; do the same instead of
        # keeping whatever colour happens to sit under alpha 0.
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    elif channels == 2:  # gray + alpha
        alpha = image[:, :, 1:2].astype(np.float32) / 255.0
        return (image[:, :, :1] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    image = np.ascontiguousarray(image[:, :, :3])
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale by the depth's full range (colour images of 16 bits: photographs use the whole range)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    if image.dtype.kind == "f":
        high = 1.0 if float(np.nanmax(image)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(image) * (255.0 / high) + 0.5, 0, 255).astype(np.uint8)
    info = np.iinfo(image.dtype)
    scaled = (image.astype(np.float64) - info.min) * (255.0 / (info.max - info.min))
    return (scaled + 0.5).astype(np.uint8)


def fit_image(image: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """Resize (stretching, as the recipe does) and convert to the wanted channel count."""
    height, width = image.shape[:2]
    shrinking = height * width > image_size * image_size
    resized = cv2.resize(
        image,
        (image_size, image_size),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )
    if resized.ndim == 2:
        resized = resized[:, :, None]
    if resized.shape[2] == channels:
        return resized
    if channels == 1:
        return cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)[:, :, None]
    return cv2.cvtColor(resized, cv2.COLOR_GRAY2RGB)


def load_image(path: str | os.PathLike, image_size: int, channels: int) -> np.ndarray:
    """Decode and fit one file: the exact preprocessing of training, export and predict."""
    return fit_image(read_image(path), image_size, channels)


@dataclass(frozen=True)
class NativeShape:
    """What a sample of the images looks like before resizing."""

    size: int  # median of each image's shorter side
    channels: int  # 1 when every sampled image is grayscale, else 3


def probe_native_shape(paths: Sequence[Path], sample: int = 64, seed: int = 0) -> NativeShape:
    """Decode a fixed random sample to learn the images' typical size and colour."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(paths), size=min(sample, len(paths)), replace=False)
    sides, colour = [], False
    for index in sorted(chosen):
        try:
            image = read_image(paths[index])
        except UnreadableImage:
            continue
        sides.append(min(image.shape[:2]))
        colour = colour or (image.shape[2] == 3 and not _is_gray(image))
    if not sides:
        return NativeShape(size=32, channels=3)
    return NativeShape(size=int(np.median(sides)), channels=3 if colour else 1)


def _is_gray(image: np.ndarray) -> bool:
    """RGB files whose three channels are equal (many scanned X-rays) are grayscale."""
    return bool(np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2]))
