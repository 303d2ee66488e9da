"""DICOM and 16-bit input: pydicom's own test files and files written here with pydicom, read through the modality
LUT, the VOI LUT or window, else a percentile window; MONOCHROME1 inverted; what cannot be read is skipped by name.
A folder mixing DICOM, 16-bit PNG and 8-bit JPEG searches, exports and predicts on the same pixels."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pydicom
import pytest
from helpers import run
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

import automl_img
from automl_img.data import list_image_folder
from automl_img.data.decode import DECODE_VERSION, UnreadableImage, read_image
from automl_img.outputs.bundle import BundleManifest
from automl_img.study.handle import SKIPPED_FILE


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", signed: bool = False, **attributes):
    """A single-frame grayscale DICOM file, as a modality would write one."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = int(signed)
    dataset.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    for name, value in attributes.items():
        setattr(dataset, name, value)
    dataset.save_as(path, enforce_file_format=True)
    return path


def ramp(low: int = 0, high: int = 4095, shape=(16, 16)) -> np.ndarray:
    return np.linspace(low, high, num=shape[0] * shape[1]).round().astype(np.int64).reshape(shape)


def dicom_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM's linear VOI window (PS3.3 C.11.2.1.2.1) to 0..255, as the standard writes it."""
    scaled = ((values - (centre - 0.5)) / (width - 1) + 0.5) * 255
    low, high = centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2
    return np.where(values <= low, 0, np.where(values > high, 255, scaled))


def test_pydicoms_own_files_read_or_are_refused_by_name():
    ct = read_image(get_testdata_file("CT_small.dcm"))  # 16-bit CT, rescale intercept -1024, no window
    stored = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array
    assert ct.shape == (*stored.shape, 1) and ct.dtype == np.uint8
    assert (ct == 0).mean() <= 0.01 and (ct == 255).mean() <= 0.01  # the percentile window clips 0.5 % each side
    order = np.argsort(stored, axis=None, kind="stable")
    assert np.all(np.diff(ct.reshape(-1)[order].astype(int)) >= 0)  # a monotone map of the stored values

    mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))  # with a window centre and width
    expected = dicom_window(mr.pixel_array.astype(float), float(mr.WindowCenter), float(mr.WindowWidth))
    assert np.abs(read_image(get_testdata_file("MR_small.dcm"))[:, :, 0] - expected).max() <= 0.5 + 1e-9

    assert read_image(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).shape == (100, 100, 3)  # colour, JPEG
    refused = {
        "SC_rgb_rle_2frame.dcm": "multi-frame DICOM (2 frames)",
        "MR_small_jpeg_ls_lossless.dcm": "compressed DICOM (JPEG-LS Lossless Image Compression) and no decoder",
        "MR_truncated.dcm": "DICOM pixel data unreadable",
    }
    for name, reason in refused.items():
        with pytest.raises(UnreadableImage, match=reason.replace("(", r"\(").replace(")", r"\)")):
            read_image(get_testdata_file(name))


def test_rescale_then_window_and_monochrome1_inverted(tmp_path):
    stored = ramp()
    attributes = {"RescaleSlope": 2, "RescaleIntercept": -1000, "WindowCenter": 3000, "WindowWidth": 4000}
    normal = read_image(write_dicom(tmp_path / "m2.dcm", stored, **attributes))[:, :, 0]
    expected = dicom_window(stored * 2.0 - 1000, 3000, 4000)
    assert np.abs(normal - expected).max() <= 0.5 + 1e-9
    assert 0 < (normal == 0).mean() < 0.5 and 0 < (normal == 255).mean() < 0.5  # the window clips both ends
    inverted = read_image(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1", **attributes))[:, :, 0]
    assert np.array_equal(inverted.astype(int), 255 - normal.astype(int))


def test_a_voi_lut_sequence_is_applied(tmp_path):
    stored = ramp(0, 255)
    lut = pydicom.Dataset()
    lut.LUTDescriptor = [256, 0, 8]  # 256 entries from stored value 0, 8-bit output
    lut.LUTData = [255 - value for value in range(256)]  # an inverting table, unlike any window
    lut["LUTData"].VR = "US"
    image = read_image(write_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=pydicom.Sequence([lut])))
    assert np.array_equal(image[:, :, 0].astype(int), 255 - stored)


def test_16_bit_png_and_dicom_without_window_share_the_percentile_window(tmp_path):
    stored = ramp(100, 3000).astype(np.uint16)  # 12 bits used of 16: a plain cut would leave 0..12 grey levels
    cv2.imwrite(str(tmp_path / "xray.png"), stored)
    png = read_image(tmp_path / "xray.png")
    dicom = read_image(write_dicom(tmp_path / "xray.dcm", stored))
    assert np.array_equal(png, dicom) and png.min() == 0 and png.max() == 255
    assert read_image(tmp_path / "xray.png").dtype == np.uint8


def test_without_pydicom_a_dicom_file_names_the_extra(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "x.dcm", ramp())
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if the extra were not installed
    with pytest.raises(UnreadableImage, match=r"reading DICOM needs pydicom \(pip install 'automl-img\[dicom\]'\)"):
        read_image(path)


def mixed_folder(root):
    """Two classes told apart by a bright square's corner: DICOM (MONOCHROME1 among them, one file without an
    extension), 16-bit PNG and 8-bit JPEG, and one broken DICOM file."""
    rng = np.random.default_rng(0)
    for label, corner in (("left", 0), ("right", 10)):
        (root / label).mkdir(parents=True)
        for index in range(24):
            pixels = rng.integers(200, 900, size=(16, 16))
            pixels[2:8, corner + 2 : corner + 6] = 3500
            kind = index % 4
            if kind == 0:
                write_dicom(root / label / f"{index}.dcm", pixels)
            elif kind == 1:
                write_dicom(root / label / f"IM{index:04d}", 4095 - pixels, "MONOCHROME1")
            elif kind == 2:
                cv2.imwrite(str(root / label / f"{index}.png"), (pixels * 16).astype(np.uint16))
            else:
                cv2.imwrite(str(root / label / f"{index}.jpg"), (pixels / 16).astype(np.uint8))
    (root / "left" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    return root


@pytest.mark.slow
def test_a_mixed_folder_searches_exports_and_predicts_on_the_same_pixels(workdir, tmp_path):
    data = mixed_folder(tmp_path / "mixed")
    run("search", data, "--trials", 1, "--epochs", 2, "-p", "image_size=16", "--precision", "float32")
    skipped = (workdir / "studies" / "mixed" / SKIPPED_FILE).read_text()
    assert "left/broken.dcm" in skipped and "DICOM" in skipped  # named, with the reason
    run("export-best", "--study", "mixed", "--ensemble", 1)
    predicted = workdir / "predicted.json"
    run("predict", workdir / "studies" / "mixed" / "export", data, "--json", predicted)
    rows = {row["path"]: row for row in json.loads(predicted.read_text())}

    image_set = list_image_folder(data)
    assert "left/IM0001" in image_set.paths  # a DICOM file without an extension is an image
    (cache,) = (workdir / "studies" / "cache").glob("*-16px-1ch.npy")
    searched = np.load(cache)  # the pixels the trial trained and was scored on

    import keras

    model = keras.saving.load_model(workdir / "studies" / "mixed" / "export" / "model.keras")
    readable = [i for i, path in enumerate(image_set.paths) if not path.endswith("broken.dcm")]
    calibration = BundleManifest.read(workdir / "studies" / "mixed" / "export").calibration
    assert calibration is not None
    expected = calibration.apply(model.predict(searched[readable], verbose=0))  # as predict calibrates
    for row, probabilities in zip(readable, expected):
        given = rows[str(data / image_set.paths[row])]["probabilities"]
        assert np.allclose([given[name] for name in ("left", "right")], probabilities, atol=1e-5)
    assert str(data / "left" / "broken.dcm") not in rows

    # The bundle says how its pixels were decoded; one decoded otherwise says so when it is loaded.
    manifest = workdir / "studies" / "mixed" / "export" / "bundle.json"
    stored = json.loads(manifest.read_text())
    assert stored["preprocessing"]["decode"] == DECODE_VERSION and "MONOCHROME1" in stored["preprocessing"]["windowing"]
    stored["preprocessing"].pop("decode")  # as bundles before DICOM were written
    manifest.write_text(json.dumps(stored))
    with pytest.warns(UserWarning, match="decoded 16-bit grayscale images by their full range"):
        automl_img.load_bundle(manifest.parent)
