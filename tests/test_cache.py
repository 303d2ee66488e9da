"""Decode once: the cache is reused across runs, notices changed files, and keeps every result honest."""

from __future__ import annotations

import os

import cv2
import numpy as np

from automl_img.data import ImageCache, list_image_folder, load_image


def test_second_run_reads_the_cache_instead_of_decoding(tmp_path, digits_copy, monkeypatch):
    images = list_image_folder(digits_copy)
    first = ImageCache(tmp_path / "cache", images).load(16, 1)
    assert first.images.shape == (1797, 16, 16, 1) and not first.unreadable
    row = 123
    assert np.array_equal(first.images[row], load_image(digits_copy / images.paths[row], 16, 1))

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded again although the cache holds this size")

    monkeypatch.setattr("automl_img.data.cache.load_image", must_not_decode)
    again = ImageCache(tmp_path / "cache", list_image_folder(digits_copy)).load(16, 1)  # a new run
    assert isinstance(again.images, np.memmap) and np.array_equal(again.images, first.images)


def test_cache_notices_added_removed_and_changed_files(tmp_path, digits_copy):
    def fingerprint() -> str:
        return ImageCache(tmp_path / "cache", list_image_folder(digits_copy)).fingerprint

    original = fingerprint()
    assert fingerprint() == original
    one = next((digits_copy / "4").glob("*.png"))
    cv2.imwrite(str(digits_copy / "4" / "new.png"), np.zeros((8, 8), np.uint8))
    added = fingerprint()
    (digits_copy / "4" / "new.png").unlink()
    assert fingerprint() == original
    os.utime(one, ns=(one.stat().st_atime_ns, one.stat().st_mtime_ns + 10**9))  # rewritten later
    assert len({original, added, fingerprint()}) == 3
    one.unlink()
    assert fingerprint() not in (original, added)


def test_sizes_and_channels_are_cached_separately(tmp_path, digits_dir):
    cache = ImageCache(tmp_path / "cache", list_image_folder(digits_dir))
    gray, rgb = cache.load(8, 1), cache.load(12, 3)
    assert gray.images.shape[1:] == (8, 8, 1) and rgb.images.shape[1:] == (12, 12, 3)
    assert sorted(p.name.split("-", 1)[1] for p in (tmp_path / "cache").glob("*.npy")) == [
        "12px-3ch.npy",
        "8px-1ch.npy",
    ]
    assert not list((tmp_path / "cache").glob("*partial*"))


def test_unreadable_rows_are_listed_and_zero(tmp_path, digits_copy):
    (digits_copy / "0" / "broken.png").write_bytes(b"nope")
    images = list_image_folder(digits_copy)
    decoded = ImageCache(tmp_path / "cache", images).load(8, 1)
    row = images.paths.index("0/broken.png")
    assert decoded.unreadable == {row: "not a readable image (corrupt, truncated or unsupported format)"}
    assert not decoded.readable[row] and decoded.readable.sum() == 1797
    assert not decoded.images[row].any()
