"""Are the explanations right? Grad-CAM checked, not just drawn (issue 29).

1. The pointing game: a synthetic folder whose class is decided only by a small mark (an X or a square outline,
   5 px) at a random place on a noisy 64 px background. A short search and export-best, then, on every test image,
   whether the map's peak falls inside the mark's box (grown by 2 px). Target: at least 80 % of test images.
   (The method, maps at the end of every stage averaged, was chosen on another set: a plus or a ring of 7 px at
   48 px, where the last stage's map alone pointed right for 20 % of the images and the average for 91 %.)
3. The shortcut (a model that learned the hospital's marker instead of the joint is only caught by looking): the
   same folder, but every "square" image also carries a 4 px marker in its top-left corner. Reported: the share of
   the "square" test images whose map peaks within 8 px of the marker, the map's mean there over its mean, and
   whether the model uses the marker (the share of all test images called "square" once the marker is added).
2. The sanity check (Adebayo et al. 2018): the maps of the trained bundle against those of the same model with
   re-initialised weights; the Spearman rank correlation of each pair, median over test images, must be below 0.5.

    python benchmarks/explain.py [--trials 6] [--out benchmarks/results/explain.json]

Writes the figures and the command to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

SIZE, MARK, PER_CLASS = 64, 5, 300
KINDS = ("cross", "square")


def draw_mark(image: np.ndarray, kind: str, top: int, left: int) -> None:
    if kind == "cross":
        for step in range(MARK):
            image[top + step, left + step] = image[top + step, left + MARK - 1 - step] = 255
    else:
        cv2.rectangle(image, (left, top), (left + MARK - 1, top + MARK - 1), 255, 1)


def write_folder(root: Path, seed: int = 0, shortcut: bool = False) -> dict[str, tuple[int, int]]:
    """The folder, and where each file's mark is (top, left); ``shortcut``: the squares carry a corner marker."""
    rng = np.random.default_rng(seed)
    where = {}
    for kind in KINDS:
        (root / kind).mkdir(parents=True)
        for index in range(PER_CLASS):
            image = rng.integers(0, 140, size=(SIZE, SIZE), dtype=np.uint8)
            top, left = (int(v) for v in rng.integers(0, SIZE - MARK, size=2))
            draw_mark(image, kind, top, left)
            if shortcut and kind == "square":
                image[1:5, 1:5] = 255
            name = f"{kind}/{index:04d}.png"
            cv2.imwrite(str(root / name), image)
            where[name] = (top, left)
    return where


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x.reshape(-1), kind="stable"), kind="stable") for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def searched_maps(work: Path, name: str, trials: int) -> tuple[dict, list[str], np.ndarray, np.ndarray, int]:
    """Search and export the folder ``work/name``; its bundle, test files, their maps and test images, its size."""
    from automl_img.data import load_image
    from automl_img.outputs.explain import grad_cam
    from automl_img.tf_runtime import keras

    search = [sys.executable, "-m", "automl_img", "search", str(work / name), "--trials", str(trials)]
    subprocess.run(search + ["-p", f"image_size={SIZE}", "--seed", "0"], cwd=work, check=True)
    subprocess.run([sys.executable, "-m", "automl_img", "export-best", "--study", name], cwd=work, check=True)
    bundle = work / "studies" / name / "export"
    manifest = json.loads((bundle / "bundle.json").read_text())
    split = json.loads((work / "studies" / name / "split.json").read_text())
    test = [path for path, _label, part in split["files"] if part == "test"]
    size = manifest["preprocessing"]["image_size"]
    images = np.stack([load_image(work / name / path, size, 1) for path in test])
    model = keras.saving.load_model(bundle / "model.keras")
    return manifest, test, grad_cam(model, images), images, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--out", default="benchmarks/results/explain.json")
    args = parser.parse_args()
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    work = Path(tempfile.mkdtemp(prefix="explain-"))
    started = time.time()
    where = write_folder(work / "marks", seed=1)
    manifest, test, maps, images, size = searched_maps(work, "marks", args.trials)
    scale, hits = size / SIZE, 0
    for name, cam in zip(test, maps):
        top, left = where[name]
        row, col = np.unravel_index(np.argmax(cam), cam.shape)
        inside = top - 2 <= row / scale <= top + MARK + 1 and left - 2 <= col / scale <= left + MARK + 1
        hits += bool(inside)

    from automl_img.data import load_image
    from automl_img.outputs.explain import grad_cam
    from automl_img.tf_runtime import keras

    model = keras.saving.load_model(work / "studies" / "marks" / "export" / "model.keras")
    random_maps = grad_cam(keras.models.clone_model(model), images)  # the same architecture, weights drawn afresh
    correlations = [spearman(a, b) for a, b in zip(maps, random_maps)]

    write_folder(work / "shortcut", seed=2, shortcut=True)
    shortcut, short_test, short_maps, _, short_size = searched_maps(work, "shortcut", args.trials)
    squares = np.stack([cam for path, cam in zip(short_test, short_maps) if path.startswith("square/")])
    near = round(8 * short_size / SIZE)
    on_marker = [np.all(np.array(np.unravel_index(np.argmax(cam), cam.shape)) < near) for cam in squares]
    # Does the model use the marker? Every test image with it: the share then called "square".
    short_model = keras.saving.load_model(work / "studies" / "shortcut" / "export" / "model.keras")
    marked = np.stack([load_image(work / "shortcut" / path, short_size, 1) for path in short_test])
    corner = slice(round(1 * short_size / SIZE), round(5 * short_size / SIZE))
    marked[:, corner, corner] = 255
    square = shortcut["class_names"].index("square")
    reliance = float(np.mean(np.argmax(short_model(marked, training=False).numpy(), axis=1) == square))
    result = {
        "command": command,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "test_images": len(test),
        "test_accuracy": manifest["test"]["accuracy"],
        "pointing_game": hits / len(test),
        "sanity_median_spearman": float(np.median(correlations)),
        "shortcut_test_accuracy": shortcut["test"]["accuracy"],
        "shortcut_called_square_with_the_marker_added": reliance,
        "shortcut_maps_peaking_on_the_marker": float(np.mean(on_marker)),
        "shortcut_map_on_the_marker_over_its_mean": float(squares[:, :near, :near].mean() / squares.mean()),
        "image_size": size,
        "seconds": round(time.time() - started, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
