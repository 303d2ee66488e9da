"""How much of the fine-detail set's bound (``ceiling.py``: a classifier given the true signs) the drawing keeps.

``finedetail.py`` draws at 448 px with integer coordinates (OpenCV's ellipse and rectangle take ints), so the
joint space as drawn is a whole number of drawing pixels: its width is the true one rounded to half a pixel at
224 px, give or take, before any blur or noise. This samples the signs as the generator does (the joint's centre
and the condyles' radius too), computes the width as drawn, and scores the same classifier as ``ceiling.py`` on
the true signs and on the drawn ones (200,000 to fit, 50,000 to score; class shares as in the set).

    cd benchmarks && python exploratory/drawn_signs_bound.py
"""

import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from finedetail import GRADE_SHARES, SCALE, SIZE, SPUR_DRAWN, joint_space, sclerosis_of, spur_length


def sample(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True signs, signs as drawn (in pixels at 224 px), grades."""
    big = SIZE * SCALE
    grades = rng.choice(len(GRADE_SHARES), size=count, p=GRADE_SHARES)
    true, drawn = [], []
    for grade in grades:
        centre = big / 2 + rng.normal(0, 10) * SCALE
        condyle = rng.uniform(26, 32) * SCALE
        gap = joint_space(grade, rng) * SCALE
        spur = spur_length(grade, rng)
        spur = spur if spur > SPUR_DRAWN else 0.0
        sclerosis = sclerosis_of(grade, rng)
        # As finedetail.py draws them: the tibia at int(top), the condyles to their int centre + int radius.
        as_drawn = int(centre + gap / 2) - (int(centre - gap / 2 - condyle) + int(condyle))
        true.append((gap / SCALE, spur, sclerosis))
        drawn.append((as_drawn / SCALE, round(spur * SCALE) / SCALE, sclerosis))
    return np.array(true), np.array(drawn), grades


def main() -> None:
    fit_true, fit_drawn, fit_grades = sample(200_000, np.random.default_rng(0))
    test_true, test_drawn, test_grades = sample(50_000, np.random.default_rng(1))
    for name, fit, test in (("true signs", fit_true, test_true), ("signs as drawn", fit_drawn, test_drawn)):
        bound = HistGradientBoostingClassifier(random_state=0).fit(fit, fit_grades)
        print(f"{name}: accuracy {(bound.predict(test) == test_grades).mean():.4f}")
    error = fit_drawn[:, 0] - fit_true[:, 0]
    print(f"joint space as drawn minus true, px at 224: mean {error.mean():.3f}, sd {error.std():.3f}")


if __name__ == "__main__":
    main()
