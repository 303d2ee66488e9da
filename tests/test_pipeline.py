"""The input pipeline: both paths (in memory, streamed from the memory map) give every row once per
epoch, reshuffled each epoch, and augmentation is applied, varies by epoch and repeats with the seed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from automl_img.models import training
from automl_img.space import TrainingParams

RECIPE_AUGMENTATION = TrainingParams(
    image_size=16,
    batch_size=8,
    learning_rate=1e-3,
    weight_decay=0.0,
    label_smoothing=0.0,
    rotation=30.0,
    zoom=0.2,
    width_shift=0.1,
    height_shift=0.1,
    horizontal_flip=True,
)


@pytest.fixture
def tagged(tmp_path):
    """A memory-mapped uint8 array whose label is each row's number, and a square in each image."""
    images = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8, shape=(50, 16, 16, 1))
    images[:, 4:12, 4:12, :] = 255
    images.flush()
    return np.load(tmp_path / "images.npy", mmap_mode="r"), np.arange(50, dtype=np.int64)


@pytest.fixture(params=["in memory", "streamed"])
def path(request, monkeypatch):
    if request.param == "streamed":
        monkeypatch.setattr(training, "IN_MEMORY_BYTES", 0)
    return request.param


def epochs(dataset, count: int) -> list[list[np.ndarray]]:
    return [[(np.asarray(x), np.asarray(y)) for x, y in dataset] for _ in range(count)]


def test_every_row_once_per_epoch_and_reshuffled(tagged, path):
    images, labels = tagged
    rows = np.arange(3, 40)
    first, second = epochs(training.batches(images, labels, rows, 8, shuffle_seed=5), 2)
    for epoch in (first, second):
        seen = np.concatenate([y for _, y in epoch])
        assert sorted(seen) == list(rows) and [len(y) for _, y in epoch] == [8, 8, 8, 8, 5]
    assert [y.tolist() for _, y in first] != [y.tolist() for _, y in second]
    unshuffled = np.concatenate([y for _, y in epochs(training.batches(images, labels, rows, 8), 1)[0]])
    assert unshuffled.tolist() == rows.tolist()  # val and predict keep the order


def test_augmentation_is_applied_varies_by_epoch_and_repeats_with_the_seed(tagged, path):
    images, labels = tagged
    rows = np.arange(50)
    first, second = epochs(training.batches(images, labels, rows, 8, RECIPE_AUGMENTATION, shuffle_seed=3), 2)
    again = epochs(training.batches(images, labels, rows, 8, RECIPE_AUGMENTATION, shuffle_seed=3), 1)[0]
    warped = np.concatenate([x for x, _ in first])
    assert warped.dtype == np.uint8 and warped.shape == (50, 16, 16, 1)
    assert (warped != np.asarray(images)[0]).any(axis=(1, 2, 3)).mean() > 0.9  # nearly every image moved
    assert all((a == b).all() for (a, _), (b, _) in zip(first, again))  # same seed, same pixels
    assert any((a != b).any() for (a, _), (b, _) in zip(first, second))  # a new epoch, new draws


def test_random_erasing_replaces_one_rectangle_of_noise_in_the_share_of_images_asked_for(tagged, path):
    from automl_img.models.augment import ERASED_AREA

    images, labels = tagged
    always = TrainingParams(
        image_size=16, batch_size=10, learning_rate=1e-3, weight_decay=0.0, label_smoothing=0.0, erasing=1.0
    )
    erased = np.concatenate(
        [x for x, _ in epochs(training.batches(images, labels, np.arange(50), 10, always, shuffle_seed=1), 1)[0]]
    )
    for image in erased[..., 0]:
        changed = image != np.asarray(images)[0, ..., 0]
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert changed.sum() >= 0.9 * box  # one rectangle (noise may repeat a pixel's own value)
        assert box <= ERASED_AREA[1] * 16 * 16 * 1.25  # within the largest area, up to rounding of the sides
    half = dataclasses.replace(always, erasing=0.5)
    share = np.mean(
        [
            (x != np.asarray(images)[0]).any(axis=(1, 2, 3)).mean()
            for x, _ in epochs(training.batches(images, labels, np.arange(50), 10, half, shuffle_seed=2), 8)[0]
            + epochs(training.batches(images, labels, np.arange(50), 10, half, shuffle_seed=3), 8)[0]
        ]
    )
    assert 0.35 < share < 0.65
