"""The study's split: stratified, fixed by its seed, pre-split parts kept."""

from __future__ import annotations

import numpy as np
import pytest

from automl_img.data import ImageSet, list_image_folder, make_split
from automl_img.errors import DataError


def image_set(counts: dict[str, int]) -> ImageSet:
    rows = [(f"{name}/{i}.png", name) for name, n in counts.items() for i in range(n)]
    return ImageSet.from_labelled_files("/data", rows)


def test_split_is_stratified_and_fixed_by_seed():
    images = image_set({"a": 100, "b": 40, "c": 7})
    split = make_split(images, seed=3)
    for part, share in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        for label, total in enumerate((100, 40)):
            rows = split.indices(part)
            assert abs((images.labels[rows] == label).sum() - share * total) <= 1
    assert all((images.labels[split.indices(p)] == 2).sum() >= 1 for p in ("train", "val", "test"))
    assert make_split(images, seed=3).hash == split.hash
    assert make_split(images, seed=4).hash != split.hash


def test_split_saved_and_loaded_is_the_same(tmp_path):
    split = make_split(image_set({"a": 10, "b": 10}), seed=0)
    split.save(tmp_path / "split.json")
    again = type(split).load(tmp_path / "split.json", root=tmp_path)
    assert again.hash == split.hash and np.array_equal(again.parts, split.parts)


def test_class_too_small_to_split_is_named():
    with pytest.raises(DataError, match=r"at least 3, but rare \(2\) has fewer"):
        make_split(image_set({"common": 10, "rare": 2}), seed=0)


def test_pre_split_without_val_carves_val_from_train(tmp_path):
    for part, n in (("train", 20), ("test", 5)):
        for label in ("x", "y"):
            (tmp_path / part / label).mkdir(parents=True)
            for i in range(n):
                (tmp_path / part / label / f"{i}.png").write_bytes(b"")
    images = list_image_folder(tmp_path)
    split = make_split(images, seed=0)
    counts = split.counts()
    assert counts["test"] == 10 and counts["val"] == 6 and counts["train"] == 34
    assert all(images.paths[i].startswith("test/") for i in split.indices("test"))
