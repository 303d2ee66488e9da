"""How well the fine-detail set can be graded at all: a classifier given each image's true signs (issue 32).

``finedetail.py`` draws every image from three signs of its grade (the joint space's width, the spurs' length, the
sclerosis), each with noise, so neighbouring grades overlap. This draws the splits again with the same seed,
recording each image's signs (checked against the files on disk), fits a gradient-boosted classifier on 300,000
signs sampled as the generator samples them, and scores it on the test split's own signs: an upper bound for any
model that sees only the pixels. Given exports' ``test_predictions.csv``, it also counts the images each export
gets wrong where the bound gets them right.

    cd benchmarks && python ceiling.py cmp0=/tmp/w/cmp/studies/automl/export/test_predictions.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
from _common import DATA, write_result
from finedetail import GRADE_SHARES, SPUR_DRAWN, joint_space, radiograph_and_signs, sclerosis_of, spur_length
from sklearn.ensemble import HistGradientBoostingClassifier

SAMPLES = 300_000


def sampled_signs(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    grades = rng.choice(len(GRADE_SHARES), size=count, p=GRADE_SHARES)
    signs = []
    for grade in grades:
        spur = spur_length(grade, rng)
        signs.append((joint_space(grade, rng), spur if spur > SPUR_DRAWN else 0.0, sclerosis_of(grade, rng)))
    return np.array(signs), grades


def split_signs(data: Path, counts: dict[str, int], seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each split's signs and grades, in the order finedetail.py wrote them (file 00042.png is row 42)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in counts.items():
        grades = rng.choice(len(GRADE_SHARES), size=count, p=GRADE_SHARES)
        drawn = [radiograph_and_signs(int(grade), rng) for grade in grades]
        on_disk = cv2.imread(str(data / split / str(grades[-1]) / f"{count - 1:05d}.png"), cv2.IMREAD_GRAYSCALE)
        if on_disk is None or not np.array_equal(on_disk, drawn[-1][0]):
            raise SystemExit(f"{data / split} was not drawn with seed {seed} and these counts")
        splits[split] = np.array([signs for _, signs in drawn]), grades
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", nargs="*", help="NAME=test_predictions.csv of an export of this data")
    parser.add_argument("--data", type=Path, default=DATA / "finedetail")
    parser.add_argument("--seed", type=int, default=2026, help="finedetail.py's --seed")
    parser.add_argument("--counts", default="2400,400,800", help="finedetail.py's --train,--val,--test")
    args = parser.parse_args()
    counts = dict(zip(("train", "val", "test"), map(int, args.counts.split(",")), strict=True))
    signs, grades = sampled_signs(SAMPLES, np.random.default_rng(0))
    bound = HistGradientBoostingClassifier(random_state=0).fit(signs, grades)
    held, held_grades = sampled_signs(100_000, np.random.default_rng(1))
    figures: dict = {"data": str(args.data), "expected_accuracy": round(float(bound.score(held, held_grades)), 4)}
    splits = split_signs(args.data, counts, args.seed)
    for split, (drawn, drawn_grades) in splits.items():
        figures[f"{split}_accuracy"] = round(float(bound.score(drawn, drawn_grades)), 4)
    right = bound.predict(splits["test"][0]) == splits["test"][1]
    for named in args.predictions:
        name, path = named.split("=", 1)
        with open(path) as file:
            rows = list(csv.DictReader(file))
        index = np.array([int(Path(row["path"]).stem) for row in rows])
        correct = np.array([row["predicted_class"] == row["true_class"] for row in rows])
        figures[name] = {
            "test_accuracy": round(float(correct.mean()), 4),
            "wrong_where_the_bound_is_right": int((right[index] & ~correct).sum()),
            "right_where_the_bound_is_wrong": int((~right[index] & correct).sum()),
            "both_wrong": int((~right[index] & ~correct).sum()),
        }
    print(figures)
    write_result("ceiling-finedetail", figures)


if __name__ == "__main__":
    main()
