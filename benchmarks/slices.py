"""Score exported bundles on all 10,000 Fashion-MNIST test images and on each of its five 2,000-image slices.

    python benchmarks/slices.py NAME=BUNDLE_FOLDER [NAME=BUNDLE_FOLDER ...] [--out NAME]

The subsets' test splits are slices of the official test set (fashion_mnist.py): fashion-mnist-6k tests on
images 0-199 of each class, fashion-mnist-6k-b on 200-399, fashion-mnist-600-b on 400-599. Every subset trains on
official *training* images only, so the whole test set is unseen by any bundle: scoring a bundle on all of it,
and on every slice, tells how much of a subset's test score is the model and how much is its slice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import write_result
from fashion_mnist import CLASSES, load

SLICE = 200  # test images per class in each slice
SUBSET_SLICE = {"fashion-mnist-6k": 0, "fashion-mnist-6k-b": 1, "fashion-mnist-600-b": 2}


def slice_rows(labels: np.ndarray) -> list[np.ndarray]:
    """The rows of each slice: images k*200..k*200+199 of each class, as fashion_mnist.py cuts them."""
    per_class = [np.flatnonzero(labels == label) for label in range(len(CLASSES))]
    return [
        np.sort(np.concatenate([rows[start : start + SLICE] for rows in per_class]))
        for start in range(0, min(len(rows) for rows in per_class), SLICE)
    ]


def probabilities(bundle, images: np.ndarray) -> np.ndarray:
    """The bundle's class probabilities for each image, columns in CLASSES order."""
    predictions = bundle.predict(images[..., None])  # a DataFrame where pandas is installed, else a list
    if hasattr(predictions, "columns"):
        return predictions[list(CLASSES)].to_numpy()
    return np.array([[p.probabilities[name] for name in CLASSES] for p in predictions])


def scores(right: np.ndarray, slices: list[np.ndarray]) -> dict:
    return {
        "all_test_accuracy": round(float(right.mean()), 4),
        "slice_accuracy": [round(float(right[rows].mean()), 4) for rows in slices],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "bundles", nargs="+", help="NAME=FOLDER: a bundle export-best wrote from a Fashion-MNIST folder"
    )
    parser.add_argument("--out", default="slices", help="results/<out>.json")
    parser.add_argument(
        "--average",
        action="store_true",
        help="also score the average of all the bundles' probabilities (an ensemble of them)",
    )
    args = parser.parse_args()
    from automl_img.api import load_bundle

    images, labels = load("test")
    slices = slice_rows(labels)
    figures: dict = {
        "test_images": len(labels),
        "slices": [f"images {k * SLICE}-{k * SLICE + SLICE - 1} of each class" for k in range(len(slices))],
        "subset_test_slice": SUBSET_SLICE,
        "bundles": {},
    }
    total = 0.0
    for name, _, folder in (spec.partition("=") for spec in args.bundles):
        bundle = load_bundle(Path(folder))
        if sorted(bundle.manifest.class_names) != sorted(CLASSES):
            raise SystemExit(f"{folder}: not a Fashion-MNIST bundle (classes {bundle.manifest.class_names})")
        probs = probabilities(bundle, images)
        total = total + probs
        figures["bundles"][name] = {
            "folder": folder,
            "dataset": bundle.manifest.dataset.source,
            "own_test_accuracy": bundle.manifest.test.accuracy,
            **scores(probs.argmax(axis=1) == labels, slices),
        }
        print(name, figures["bundles"][name], flush=True)
    if args.average:
        figures["average_of_all"] = scores(total.argmax(axis=1) == labels, slices)
        print("average of all", figures["average_of_all"])
    write_result(args.out, figures)


if __name__ == "__main__":
    main()
