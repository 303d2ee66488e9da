"""DICOM files and high-bit-depth grayscale images to the uint8 pixels a model sees.

A DICOM image goes through its modality LUT (rescale slope and intercept: Hounsfield units for CT), then its VOI
LUT or window centre/width when the file has them, else ``window``: a robust percentile window. MONOCHROME1
(white is low) is inverted. 16-bit PNG and TIFF grayscale images take the same ``window`` instead of a plain cut
to 8 bits, so a 12-bit X-ray stored in 16 bits keeps its contrast. Every path (the search's cache, export,
predict, the Python API) decodes through here, so the bundle sees the pixels it was trained on.

DICOM needs pydicom, the ``dicom`` extra: ``pip install 'automl-img[dicom]'``.
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np

EXTRA = "pip install 'automl-img[dicom]'"
WINDOW_PERCENTILES = (0.5, 99.5)  # the robust window: outliers (burnt-in text, collimator edges) are clipped
# Which decoder package reads which compressed transfer syntax (pydicom's optional plugins).
_DECODERS = {
    "JPEG-LS": "pip install pyjpegls",
    "JPEG 2000": "pip install pylibjpeg pylibjpeg-openjpeg",
    "JPEG": "pip install pylibjpeg pylibjpeg-libjpeg",
    "RLE": "pip install pylibjpeg pylibjpeg-rle",
}


# What a bundle says of its input's windowing (bundle.json, for people).
WINDOWING = (
    "DICOM: modality LUT, then the VOI LUT or the first window centre/width, else the 0.5-99.5 percentile window; "
    "MONOCHROME1 inverted. Grayscale of more than 8 bits (16-bit PNG, TIFF): the percentile window"
)


class DicomError(Exception):
    """A DICOM file that cannot be made into an image, with the reason in words."""


def is_dicom(head: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM`` (PACS exports often have no extension)."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def window(image: np.ndarray) -> np.ndarray:
    """The robust window: the 0.5th..99.5th percentiles of the image's values to 0..255, clipped."""
    values = image.astype(np.float64)
    low, high = np.percentile(values, WINDOW_PERCENTILES)
    if high <= low:  # a constant image (or nearly): its one value is mid-grey only if it is not the minimum
        high = low + 1.0
    return _linear(values, low, high)


def _linear(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((values - low) * (255.0 / (high - low)) + 0.5, 0, 255).astype(np.uint8)


def read_dicom(data: bytes) -> np.ndarray:
    """A DICOM file's bytes -> uint8 (H, W, 1) grayscale or (H, W, 3) RGB."""
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space
    except ImportError:
        raise DicomError(f"a DICOM file: reading DICOM needs pydicom ({EXTRA})") from None
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # its notes on odd headers; a failure is reported by name
    try:
        with warnings.catch_warnings():  # pydicom warns about every odd header value; a failure says it all
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - a broken header, in pydicom's words
        raise DicomError(f"unreadable DICOM header: {exc}") from None
    if "PixelData" not in dataset:
        raise DicomError("a DICOM file without pixel data (a report or structured data, not an image)")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"multi-frame DICOM ({frames} frames): save the frame to use as a file of its own")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001 - no decoder for the transfer syntax, or truncated pixel data
        raise DicomError(_pixel_failure(dataset, exc)) from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        image = _grayscale(dataset, pixels, apply_modality_lut, apply_voi_lut)
        return (255 - image if photometric == "MONOCHROME1" else image)[:, :, None]
    if photometric.startswith("YBR"):
        pixels = convert_color_space(pixels, photometric, "RGB")
    elif photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        pixels = apply_color_lut(pixels, dataset)
    elif photometric != "RGB" or pixels.ndim != 3:
        raise DicomError(f"DICOM photometric interpretation {photometric} is not supported")
    return _full_range(pixels)


def _grayscale(dataset, pixels: np.ndarray, apply_modality_lut, apply_voi_lut) -> np.ndarray:
    modality = apply_modality_lut(pixels, dataset)  # stored values -> the modality's units (CT: Hounsfield)
    if "VOILUTSequence" in dataset:  # a lookup table to display values of LUTDescriptor[2] bits
        bits = int(dataset.VOILUTSequence[0].LUTDescriptor[2])
        return _linear(np.asarray(apply_voi_lut(modality, dataset, prefer_lut=True), np.float64), 0, 2**bits - 1)
    values = np.asarray(modality, dtype=np.float64)
    centre, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if centre is not None and width is not None and _first(width) >= 1:  # DICOM's linear window (C.11.2.1.2.1)
        low = _first(centre) - 0.5 - (_first(width) - 1) / 2
        return _linear(values, low, low + _first(width) - 1)
    return window(values)


def _first(value) -> float:
    """Window centre and width may hold several alternatives: the first is the default."""
    try:
        return float(value)
    except TypeError:
        return float(value[0])


def _full_range(pixels: np.ndarray) -> np.ndarray:
    """Colour pixels of any bit depth to uint8 by the depth's full range, as photographs are."""
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    high = float(np.iinfo(pixels.dtype).max) if pixels.dtype.kind in "iu" else 1.0
    return _linear(pixels.astype(np.float64), 0.0, high)


def _pixel_failure(dataset, exc: Exception) -> str:
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", str(syntax)) if syntax is not None else "unknown"
    if syntax is not None and getattr(syntax, "is_compressed", False):
        decoder = next((how for kind, how in _DECODERS.items() if kind in name), "a pydicom pixel-data plugin")
        return f"compressed DICOM ({name}) and no decoder for it is installed: {decoder}"
    return f"DICOM pixel data unreadable ({name}): {exc}"
