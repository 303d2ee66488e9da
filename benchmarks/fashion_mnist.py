"""Write Fashion-MNIST (Debian's dataset-fashion-mnist IDX files) out as PNG class folders.

    python benchmarks/fashion_mnist.py [--out benchmarks/data]

makes  OUT/fashion-mnist/{train,test}/<class>/<n>.png      60,000 / 10,000 images
       OUT/fashion-mnist-6k/{train,test}/<class>/<n>.png    6,000 / 2,000 (the first 600 / 200 of each class)
       OUT/fashion-mnist-6k-b/{train,test}/<class>/<n>.png  6,000 / 2,000 (the next 600 / 200 of each class)
and    OUT/fashion-mnist-600-b/{train,test}/<class>/<n>.png   600 / 2,000 (the next 60 / 200 of each class)

automl-img's defaults were chosen on fashion-mnist-6k; fashion-mnist-6k-b and -600-b share no image with
it (nor with each other), so a comparison there does not score the defaults on the images they were picked on.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import cv2
import numpy as np

IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(part: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if part == "train" else "t10k"
    if not IDX_DIR.exists():
        raise SystemExit(f"{IDX_DIR} is missing: apt-get install dataset-fashion-mnist")
    return read_idx(IDX_DIR / f"{prefix}-images-idx3-ubyte.gz"), read_idx(IDX_DIR / f"{prefix}-labels-idx1-ubyte.gz")


def write(folder: Path, per_class: dict[str, slice]) -> Path:
    """Write each part, keeping the ``per_class[part]`` slice of each class's images."""
    if (folder / "test").exists():
        return folder
    for part, rows in per_class.items():
        images, labels = load(part)
        for label, name in enumerate(CLASSES):
            (folder / part / name).mkdir(parents=True, exist_ok=True)
            for index in np.flatnonzero(labels == label)[rows]:
                cv2.imwrite(str(folder / part / name / f"{index:05d}.png"), images[index])
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    out = parser.parse_args().out
    print(write(out / "fashion-mnist", {"train": slice(None), "test": slice(None)}))
    print(write(out / "fashion-mnist-6k", {"train": slice(600), "test": slice(200)}))
    print(write(out / "fashion-mnist-6k-b", {"train": slice(600, 1200), "test": slice(200, 400)}))
    print(write(out / "fashion-mnist-600-b", {"train": slice(1200, 1260), "test": slice(400, 600)}))


if __name__ == "__main__":
    main()
