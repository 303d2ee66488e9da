"""A development set where the class is decided by details a few pixels wide at 224 px: procedural knee-like
radiographs in five ordered grades (issue 32).

Two bright bone ends face each other across a joint space. With the grade the space narrows by about a pixel
(224 px scale), spurs (osteophytes) a few pixels long grow at the joint's edges from grade 2, and the bone
next to the joint brightens a little from grade 3. Position, rotation, bone shape, exposure, soft tissue and
noise vary per image, and the grade's own signs vary too, so neighbouring grades overlap (as real
Kellgren-Lawrence grades do). Class shares follow the public knee X-ray set's. Images are drawn at twice the
size and shrunk by area, so widths between whole pixels show as grey levels.

This set is for choosing defaults; the figures that count come from held-out data not built here.

    python benchmarks/finedetail.py                                  # benchmarks/data/finedetail (train/val/test)
    python benchmarks/finedetail.py --train 600 --val 150 --test 300 --seed 5 --out /tmp/fd-small
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from _common import DATA

GRADE_SHARES = (0.39, 0.18, 0.26, 0.13, 0.04)
SIZE = 224
SCALE = 2  # drawn at 448 px, shrunk by area
SPUR_DRAWN = 0.25  # px at 224: a shorter spur is not drawn


# The grade's three signs, at 224 px, each drawn from its grade with noise (``ceiling.py`` draws them too).
def joint_space(grade: int, rng: np.random.Generator) -> float:
    """The joint space's width in pixels: about a pixel narrower per grade."""
    return max(0.6, 7.5 - 1.05 * grade + rng.normal(0, 0.55))


def spur_length(grade: int, rng: np.random.Generator) -> float:
    """The osteophytes' length in pixels: growing from grade 2, noise alone below."""
    return max(0.0, (grade - 1) * 1.6 + rng.normal(0, 0.7) if grade >= 2 else rng.normal(0, 0.4))


def sclerosis_of(grade: int, rng: np.random.Generator) -> float:
    """How much the bone next to the joint brightens: from grade 3."""
    return (0.07 * (grade - 2) if grade >= 3 else 0.0) + rng.normal(0, 0.02)


def radiograph(grade: int, rng: np.random.Generator) -> np.ndarray:
    """One 224 px grayscale image of the given grade."""
    return radiograph_and_signs(grade, rng)[0]


def radiograph_and_signs(grade: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One 224 px grayscale image of the given grade, and its signs as drawn: the joint space and the visible spurs
    in pixels at 224 px, and the sclerosis."""
    big = SIZE * SCALE
    canvas = np.zeros((big, big), np.float32)
    # Soft tissue: a broad bright band with a random exposure gradient.
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
    cx = big / 2 + rng.normal(0, 8) * SCALE
    tissue = np.exp(-(((xx - cx) / (big * rng.uniform(0.30, 0.40))) ** 2))
    canvas += (0.18 + rng.uniform(-0.04, 0.04)) * tissue + rng.uniform(0, 0.06) * yy / big
    # The joint: its centre, its tilt, the bones' half-width.
    cy = big / 2 + rng.normal(0, 10) * SCALE
    half_width = rng.uniform(52, 66) * SCALE
    gap = joint_space(grade, rng) * SCALE  # in drawing pixels
    bone = 0.55 + rng.uniform(-0.06, 0.06)
    femur, tibia = np.zeros_like(canvas), np.zeros_like(canvas)
    # The femur's end: two condyles (ellipses) above the gap; the tibia's plateau: a flat-topped block below.
    condyle_r = rng.uniform(26, 32) * SCALE
    for side in (-1, 1):
        centre = (int(cx + side * half_width * 0.48), int(cy - gap / 2 - condyle_r))
        cv2.ellipse(femur, centre, (int(half_width * 0.55), int(condyle_r)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    cv2.rectangle(
        femur,
        (int(cx - half_width * 0.8), 0),
        (int(cx + half_width * 0.8), int(cy - gap / 2 - condyle_r)),
        1.0,
        -1,
        cv2.LINE_AA,
    )
    top = cy + gap / 2
    cv2.rectangle(tibia, (int(cx - half_width), int(top)), (int(cx + half_width), big), 1.0, -1, cv2.LINE_AA)
    # Osteophytes: small spurs at the four joint margins, longer with the grade.
    spur = spur_length(grade, rng) * SCALE
    if spur > SPUR_DRAWN * SCALE:
        for side in (-1, 1):
            x_edge = cx + side * half_width
            tri = np.array(
                [[x_edge, top + 2 * SCALE], [x_edge + side * spur, top - 0.5 * spur], [x_edge, top + 6 * SCALE]],
                np.int32,
            )
            cv2.fillPoly(tibia, [tri], 1.0, cv2.LINE_AA)
            x_fem = cx + side * half_width * 1.0
            tri = np.array(
                [
                    [x_fem, cy - gap / 2 - 3 * SCALE],
                    [x_fem + side * spur, cy - gap / 2 + 0.3 * spur],
                    [x_fem, cy - gap / 2 - 8 * SCALE],
                ],
                np.int32,
            )
            cv2.fillPoly(femur, [tri], 1.0, cv2.LINE_AA)
    bones = np.clip(femur + tibia, 0, 1)
    # Sclerosis: the bone within a few pixels of the joint brightens from grade 3.
    near_joint = np.exp(-(((yy - cy) / (10 * SCALE)) ** 2)) * bones
    sclerosis = sclerosis_of(grade, rng)
    canvas += bone * bones + sclerosis * near_joint
    # Trabecular texture inside bone, then the tilt and a little blur (the detector's spread).
    texture = cv2.GaussianBlur(rng.normal(0, 1, (big, big)).astype(np.float32), (0, 0), 3 * SCALE)
    canvas += 0.05 * texture * bones
    tilt = cv2.getRotationMatrix2D((big / 2, big / 2), rng.uniform(-6, 6), 1.0)
    canvas = cv2.warpAffine(canvas, tilt, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.6 * SCALE)
    small = cv2.resize(canvas, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    small += rng.normal(0, 0.025, small.shape).astype(np.float32)  # quantum noise, at the final size
    visible_spur = spur / SCALE if spur > SPUR_DRAWN * SCALE else 0.0
    return np.clip(small * 255, 0, 255).astype(np.uint8), (gap / SCALE, visible_spur, sclerosis)


def write_split(out: Path, count: int, rng: np.random.Generator) -> None:
    grades = rng.choice(len(GRADE_SHARES), size=count, p=GRADE_SHARES)
    for index, grade in enumerate(grades):
        folder = out / str(grade)
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{index:05d}.png"), radiograph(int(grade), rng))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA / "finedetail")
    parser.add_argument("--train", type=int, default=2400)
    parser.add_argument("--val", type=int, default=400)
    parser.add_argument("--test", type=int, default=800)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for split in ("train", "val", "test"):
        write_split(args.out / split, getattr(args, split), rng)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
