"""Messy folders and mistakes: each gets a clear message or a reported skip, never a bare traceback."""

from __future__ import annotations

import csv
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import optuna
import pytest
from helpers import run, storage_url, trials_of

from automl_img.data import list_image_folder, load_image, read_image
from automl_img.data.decode import probe_native_shape


def png_palette(path: Path) -> None:
    """An indexed-colour PNG (OpenCV cannot write one), built chunk by chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([0, 1, 2]) for _ in range(2))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 3, 0, 0, 0))
        + chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255]))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_every_colour_mode_decodes_to_uint8_rgb_or_gray(tmp_path):
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    assert read_image(tmp_path / "rgb.png")[0, 0].tolist() == [200, 0, 0]  # RGB out
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((4, 4), 77, np.uint8))
    assert read_image(tmp_path / "gray.png").shape == (4, 4, 1)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = [0, 0, 255, 255]  # opaque red; the rest fully transparent
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    decoded = read_image(tmp_path / "rgba.png")
    assert decoded[0, 0].tolist() == [255, 0, 0] and decoded[1, 1].tolist() == [255, 255, 255]
    png_palette(tmp_path / "palette.png")
    assert read_image(tmp_path / "palette.png")[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]


def test_16_bit_images_keep_their_full_range(tmp_path):
    """X-rays: 65535 is white, 32768 mid-grey; nothing is clipped to 255 and nothing wraps."""
    cv2.imwrite(str(tmp_path / "xray.png"), np.array([[0, 1000], [32768, 65535]], np.uint16))
    assert read_image(tmp_path / "xray.png")[..., 0].tolist() == [[0, 4], [128, 255]]


def test_very_large_small_and_non_square_images_fit_the_size(tmp_path):
    cv2.imwrite(str(tmp_path / "big.jpg"), np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "tiny.png"), np.full((1, 1), 9, np.uint8))
    cv2.imwrite(str(tmp_path / "wide.png"), np.full((10, 300, 3), 9, np.uint8))
    for name in ("big.jpg", "tiny.png", "wide.png"):
        for channels in (1, 3):
            assert load_image(tmp_path / name, 32, channels).shape == (32, 32, channels)


def test_mixed_gray_and_colour_folder_is_treated_as_colour(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"g{i}.png"), np.full((20, 20), 50, np.uint8))
    cv2.imwrite(
        str(tmp_path / "c.png"), np.dstack([np.zeros((20, 20), np.uint8)] * 2 + [np.full((20, 20), 9, np.uint8)])
    )
    shape = probe_native_shape(sorted(tmp_path.glob("*.png")))
    assert shape.channels == 3 and shape.size == 20


@pytest.fixture
def messy(tmp_path, digits_dir) -> Path:
    """A class-per-folder tree with every kind of mess users have."""
    root = tmp_path / "messy"
    pngs = sorted(digits_dir.glob("*/*.png"))
    for label in ("cat", "dög"):
        (root / label / "nested" / "deeper").mkdir(parents=True)
    for i, source in enumerate(pngs[:12]):
        target = root / ("cat" if i % 2 else "dög")
        name = {0: "UPPER.PNG", 1: "Ünïcödé 名前.png", 2: "nested/deeper/deep.png"}.get(i, f"{i}.png")
        (target / name).write_bytes(source.read_bytes())
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    half = pngs[20].read_bytes()
    (root / "dög" / "truncated.png").write_bytes(half[: len(half) // 2])
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "dög" / "._3.png").write_bytes(b"\x00\x05\x16\x07")  # macOS' metadata twin of a copied file
    (root / "cat" / ".thumbnails").mkdir()
    (root / "README.md").write_text("loose file")
    os.symlink(root / "cat" / "3.png", root / "dög" / "link.png")
    os.symlink(root / "cat" / "gone.png", root / "dög" / "dangling.png")
    os.symlink(root / "cat", root / "cat" / "nested" / "loop")  # a symlink loop must not hang the listing
    (root / "empty-class").mkdir()
    return root


def test_messy_folder_lists_every_image_and_reports_the_rest(messy):
    images = list_image_folder(messy)
    assert images.class_names == ("cat", "dög")  # the empty folder is left out, not a class
    names = {Path(p).name for p in images.paths}
    assert {
        "UPPER.PNG",
        "Ünïcödé 名前.png",
        "deep.png",
        "link.png",
        "empty.png",
        "corrupt.jpg",
        "truncated.png",
    } <= names
    skipped = dict(images.skipped)
    assert skipped["cat/notes.txt"] == "not an image file extension"
    assert skipped["dög/dangling.png"] == "broken link"
    assert skipped["README.md"] == "not inside a class folder"
    assert skipped["empty-class/"] == "empty class folder, left out"
    for hidden in ("cat/.DS_Store", "dög/._3.png"):  # ignored, but never without a trace
        assert skipped[hidden].startswith("hidden or system file"), skipped
    assert skipped["cat/.thumbnails/"] == "hidden folder, not searched"
    assert not any("._3.png" in path for path in images.paths)


@pytest.mark.slow
def test_messy_folder_search_reports_unreadable_files_and_keeps_going(workdir, messy):
    result = run("search", messy, "--trials", 1, "--epochs", 1, "-p", "image_size=8")
    out = result.output
    assert "skipped unreadable 3 files" in out
    for name in ("cat/empty.png (empty file)", "cat/corrupt.jpg (not a readable image", "dög/truncated.png (not a"):
        assert name in out
    assert "cat/notes.txt (not an image file extension)" in out and "empty-class/ (empty class folder" in out
    assert "Traceback" not in out
    listed = workdir / "studies" / "messy" / "skipped-files.csv"
    assert out.count(f"(every one listed in {Path('studies') / 'messy' / 'skipped-files.csv'})") == 2
    with open(listed, newline="", encoding="utf-8") as handle:
        rows = {row["path"]: (row["reason"], row["stage"]) for row in csv.DictReader(handle)}
    assert set(rows) == set(dict(list_image_folder(messy).skipped)) | {
        "cat/empty.png",
        "cat/corrupt.jpg",
        "dög/truncated.png",
    }  # every file left out, the short lines cut
    assert rows["cat/empty.png"] == ("empty file", "decoding") and rows["cat/.DS_Store"][1] == "listing"
    shown = run("show", "messy").output
    assert all(path in shown for path in rows) and f"{len(rows)} file(s) left out" in shown
    trial = trials_of("messy")[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing", "does not exist; give the folder"),
        (lambda root: (root / "file.png").write_bytes(b"x") and root / "file.png", "is a file; give the folder"),
        (
            lambda root: (
                (root / "only" / "a.png").parent.mkdir()
                or (cv2.imwrite(str(root / "only" / "a.png"), np.zeros((4, 4), np.uint8)) and root)
            ),
            "found a single class (only)",
        ),
        (lambda root: [(root / c).mkdir() for c in ("a", "b")] and root, "no images found under"),
    ],
)
def test_wrong_layouts_get_one_line_errors(workdir, tmp_path, make, message):
    root = tmp_path / "data"
    root.mkdir()
    result = run("search", make(root), "--trials", 1, expect=1)
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().startswith("Error:") and result.output.strip().count("\n") == 0
    assert optuna.get_all_study_names(storage_url()) == []  # no empty study left behind


def test_class_with_too_few_images_is_named(workdir, tmp_path, digits_dir):
    for label, count in (("plenty", 10), ("rare", 2)):
        (tmp_path / "few" / label).mkdir(parents=True)
        for source in sorted(digits_dir.glob("*/*.png"))[:count]:
            (tmp_path / "few" / label / source.name).write_bytes(source.read_bytes())
    result = run("search", tmp_path / "few", expect=1)
    assert "rare (2)" in result.output and "at least 3" in result.output


@pytest.mark.parametrize(
    "args, code, value, names, allowed",
    [
        # a usage error (exit 2) from the option's own check, before anything runs
        (["--trials", "-3"], 2, "-3", "Invalid value for '--trials'", "use 1 or more"),
        (["--epochs", "0"], 2, "0", "Invalid value for '--epochs'", "use 1 or more"),
        # names the command cannot resolve: one "Error:" line, exit 1
        (["--architecture", "resnet9000"], 1, "'resnet9000'", "unknown architecture", "known: blog-cnn"),
        (["--dataset", "nope"], 1, "'nope'", "unknown dataset", "known: digits, folder"),
        (
            ["--storage", "mongodb://h/db"],
            1,
            "'mongodb://h/db'",
            "unknown storage",
            "use sqlite:///PATH.db, postgresql://USER:PASSWORD@HOST/DB or a journal file PATH.log",
        ),
        (["--pruner", "fancy"], 1, "'fancy'", "unknown pruner", "choose from median, none"),
        (["-p", "dropout"], 1, "'dropout'", "cannot read parameter", "write NAME=VALUE, NAME=A,B,C or NAME=LOW..HIGH"),
    ],
)
def test_bad_option_values_name_the_option_the_value_and_what_is_allowed(
    workdir, digits_dir, args, code, value, names, allowed
):
    result = run("search", digits_dir, *args, expect=code)
    assert result.exit_code == code
    out = " ".join(result.output.split())  # a usage error comes in a box that may wrap its line
    assert f"{names} {value}" in out or f"{names}: {value}" in out, result.output
    assert allowed in out, result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert result.output.strip().startswith("Error:") and result.output.strip().count("\n") == 0, result.output


def test_unknown_parameter_override_stops_with_the_known_names(workdir, digits_dir):
    result = run("search", digits_dir, "--trials", 1, "--epochs", 1, "-p", "dropuot=0.3", expect=1)
    assert "dropuot" in result.output and "dropout" in result.output and "not in the search space" in result.output
