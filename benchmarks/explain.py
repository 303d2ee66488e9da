"""Are the explanations right? Occlusion and Grad-CAM checked on the same bundles, not just drawn (issue 29).

1. The pointing game: a synthetic folder whose class is decided only by a small mark (an X or a square outline,
   5 px) at a random place on a noisy 64 px background. A short search and export-best, then, on every test image,
   whether the map's peak falls inside the mark's box (grown by 2 px). Target: at least 80 % of test images.
   (Grad-CAM's form, maps at the end of every stage averaged, was chosen on another set: a plus or a ring of 7 px
   at 48 px, where the last stage's map alone pointed right for 20 % of the images and the average for 91 %.
   Occlusion's patch, an eighth of the image moved by a sixteenth, is the first and only setting tried.)
3. The shortcut (a model that learned the hospital's marker instead of the joint is only caught by looking): the
   same folder, but every "square" image also carries a 4 px marker in its top-left corner. Reported: the share of
   the "square" test images whose map peaks within 8 px of the marker, the share whose map reaches half its peak
   there (the overlay shows the corner as a second hot spot at least), the map's mean there over its mean, and
   whether the model uses the marker (the share of all test images called "square" once the marker is added).
   The same figures on the blueprint-like case the issue names: knee-like radiographs (``finedetail.py``'s, 224 px,
   five grades decided by a joint space a pixel narrower per grade), where every grade-2 image also carries a
   bright "L" side marker, as a lead marker shows on an X-ray, at a random place in the top-left corner. There the
   true signs are a few pixels wide and the marker is the easy way, as it is for a model trained on one clinic's
   referrals; searched at 128 px, the blueprint recipe's size.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

SIZE, MARK, PER_CLASS = 64, 5, 300
KINDS = ("cross", "square")
KNEE_IMAGES, KNEE_SIZE, MARKED_GRADE = 1200, 128, 2


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


def write_knee_folder(root: Path, seed: int = 3) -> dict[str, tuple[int, int, int, int]]:
    """Knee-like radiographs in class folders, every grade-MARKED_GRADE one with an "L" marker; where each marker is
    (top, left, bottom, right, at 224 px)."""
    from finedetail import GRADE_SHARES, radiograph

    rng = np.random.default_rng(seed)
    boxes = {}
    for index, grade in enumerate(rng.choice(len(GRADE_SHARES), size=KNEE_IMAGES, p=GRADE_SHARES)):
        image = radiograph(int(grade), rng)
        name = f"{grade}/{index:05d}.png"
        (root / str(grade)).mkdir(parents=True, exist_ok=True)
        if grade == MARKED_GRADE:
            top, left = (int(v) for v in rng.integers(4, 28, size=2))
            boxes[name] = draw_side_marker(image, top, left)
        cv2.imwrite(str(root / name), image)
    return boxes


def draw_side_marker(image: np.ndarray, top: int, left: int) -> tuple[int, int, int, int]:
    """A bright "L" about 11 px high, its box's top-left corner at (top, left); returns the box."""
    (width, height), _ = cv2.getTextSize("L", cv2.FONT_HERSHEY_SIMPLEX, 0.45, 2)
    cv2.putText(image, "L", (left, top + height), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 2, cv2.LINE_AA)
    return top - 1, left - 1, top + height + 2, left + width + 1


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x.reshape(-1), kind="stable"), kind="stable") for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def searched(work: Path, name: str, trials: int, size: int = SIZE) -> tuple[dict, list[str], np.ndarray, Any]:
    """Search and export the folder ``work/name``; its bundle, test files, their images and the bundle's model."""
    from automl_img.data import load_image
    from automl_img.tf_runtime import keras

    search = [sys.executable, "-m", "automl_img", "search", str(work / name), "--trials", str(trials)]
    subprocess.run(search + ["-p", f"image_size={size}", "--seed", "0"], cwd=work, check=True)
    subprocess.run([sys.executable, "-m", "automl_img", "export-best", "--study", name], cwd=work, check=True)
    bundle = work / "studies" / name / "export"
    manifest = json.loads((bundle / "bundle.json").read_text())
    split = json.loads((work / "studies" / name / "split.json").read_text())
    test = [path for path, _label, part in split["files"] if part == "test"]
    size = manifest["preprocessing"]["image_size"]
    images = np.stack([load_image(work / name / path, size, 1) for path in test])
    return manifest, test, images, keras.saving.load_model(bundle / "model.keras")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--out", default="benchmarks/results/explain.json")
    args = parser.parse_args()
    from automl_img.outputs.explain import grad_cam, occlusion
    from automl_img.tf_runtime import keras

    methods: dict[str, Callable] = {"grad-cam": grad_cam, "occlusion": occlusion}
    command = " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    work = Path(tempfile.mkdtemp(prefix="explain-"))
    started = time.time()
    where = write_folder(work / "marks", seed=1)
    manifest, test, images, model = searched(work, "marks", args.trials)
    size = images.shape[1]
    scale = size / SIZE
    random_model = keras.models.clone_model(model)  # the same architecture, weights drawn afresh

    write_folder(work / "shortcut", seed=2, shortcut=True)
    shortcut, short_test, short_images, short_model = searched(work, "shortcut", args.trials)
    short_size = short_images.shape[1]
    near = round(8 * short_size / SIZE)
    # Does the model use the marker? Every test image with it: the share then called "square".
    marked = short_images.copy()
    corner = slice(round(1 * short_size / SIZE), round(5 * short_size / SIZE))
    marked[:, corner, corner] = 255
    square = shortcut["class_names"].index("square")
    reliance = float(np.mean(np.argmax(short_model(marked, training=False).numpy(), axis=1) == square))
    squares = np.stack([image for path, image in zip(short_test, short_images) if path.startswith("square/")])

    boxes = write_knee_folder(work / "knee")
    knee, knee_test, knee_images, knee_model = searched(work, "knee", args.trials, KNEE_SIZE)
    knee_scale = knee_images.shape[1] / 224
    marked_names = [path for path in knee_test if path in boxes]
    marked_images = np.stack([image for path, image in zip(knee_test, knee_images) if path in boxes])
    unmarked = np.stack([image for path, image in zip(knee_test, knee_images) if path not in boxes])
    for image in unmarked:  # the marker drawn on every other test image: how many turn into the marked grade
        draw_side_marker(image, *(round(v * knee_scale) for v in (14, 14)))
    knee_grade = knee["class_names"].index(str(MARKED_GRADE))
    knee_reliance = float(np.mean(np.argmax(knee_model(unmarked, training=False).numpy(), axis=1) == knee_grade))

    figures: dict[str, dict] = {}
    for method, explain in methods.items():
        began = time.time()
        maps = explain(model, images)
        hits = 0
        for name, cam in zip(test, maps):
            top, left = where[name]
            row, col = np.unravel_index(np.argmax(cam), cam.shape)
            hits += bool(top - 2 <= row / scale <= top + MARK + 1 and left - 2 <= col / scale <= left + MARK + 1)
        correlations = [spearman(a, b) for a, b in zip(maps, explain(random_model, images))]
        square_maps = explain(short_model, squares)
        explained = 2 * len(images) + len(squares) + len(marked_images)
        peaks = [np.array(np.unravel_index(np.argmax(cam), cam.shape)) for cam in square_maps]
        figures[method] = {
            "pointing_game": hits / len(test),
            "sanity_median_spearman": float(np.median(correlations)),
            "shortcut_maps_peaking_on_the_marker": float(np.mean([np.all(peak < near) for peak in peaks])),
            "shortcut_map_on_the_marker_over_its_mean": float(square_maps[:, :near, :near].mean() / square_maps.mean()),
            "shortcut_maps_hot_on_the_marker": float(np.mean(square_maps[:, :near, :near].max(axis=(1, 2)) >= 0.5)),
            **knee_marker_figures(explain(knee_model, marked_images), [boxes[n] for n in marked_names], knee_scale),
            "seconds_per_image": round((time.time() - began) / explained, 3),
        }
        print(method, figures[method], flush=True)
    result = {
        "command": command,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "test_images": len(test),
        "test_accuracy": manifest["test"]["accuracy"],
        "shortcut_test_accuracy": shortcut["test"]["accuracy"],
        "shortcut_called_square_with_the_marker_added": reliance,
        "image_size": size,
        "knee_test_accuracy": knee["test"]["accuracy"],
        "knee_marked_test_images": len(marked_images),
        "knee_called_grade_2_with_the_marker_added": knee_reliance,
        "knee_image_size": knee_images.shape[1],
        "methods": figures,
        "seconds": round(time.time() - started, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def knee_marker_figures(maps: np.ndarray, boxes: list, scale: float) -> dict[str, float]:
    """Of the marked grade's maps: the share peaking on the marker's box (grown by 8 px at 224 px), the share
    reaching half their peak there, and the map's mean there over its mean."""
    peaking, hot, ratios = [], [], []
    for cam, box in zip(maps, boxes):
        top, left, bottom, right = (round(v * scale) for v in (box[0] - 8, box[1] - 8, box[2] + 8, box[3] + 8))
        region = cam[max(top, 0) : bottom + 1, max(left, 0) : right + 1]
        row, col = np.unravel_index(np.argmax(cam), cam.shape)
        peaking.append(top <= row <= bottom and left <= col <= right)
        hot.append(region.max() >= 0.5 * cam.max())
        ratios.append(region.mean() / max(cam.mean(), 1e-9))
    return {
        "knee_maps_peaking_on_the_marker": float(np.mean(peaking)),
        "knee_maps_hot_on_the_marker": float(np.mean(hot)),
        "knee_map_on_the_marker_over_its_mean": float(np.median(ratios)),
    }


if __name__ == "__main__":
    main()
