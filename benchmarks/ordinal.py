"""`--ordinal` against the same search without it, on knee-like grades: test QWK, MAE and accuracy.

    python benchmarks/ordinal.py [--budget 900] [--seed 28] [--data /tmp/knee-like]

Writes a 5-grade set of procedural radiographs (finedetail.py's, from a seed the defaults were not chosen on)
with the public knee X-ray set's split and class shares: train 2,286 / 1,046 / 1,516 / 757 / 173, val and test
in the same shares (826 and 1,656 images). Then runs, one after the other, with the same budget and seed:

    automl-img search DATA --timeout BUDGET --seed 0                 (accuracy, one-hot targets)
    automl-img search DATA --timeout BUDGET --seed 0 --ordinal       (QWK, ordinal targets searched)

and `automl-img export-best` after each, and reports each bundle's test figures and prediction sets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from _common import write_result
from finedetail import radiograph

TRAIN = (2286, 1046, 1516, 757, 173)
VAL, TEST = 826, 1656


def write_knee_like(out: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shares = np.array(TRAIN) / sum(TRAIN)
    counts = {
        "train": TRAIN,
        **{part: tuple(np.round(shares * n).astype(int)) for part, n in (("val", VAL), ("test", TEST))},
    }
    for part, per_grade in counts.items():
        for grade, count in enumerate(per_grade):
            folder = out / part / str(grade)
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(int(count)):
                cv2.imwrite(str(folder / f"{index:05d}.png"), radiograph(grade, rng))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=900, help="seconds per search")
    parser.add_argument("--seed", type=int, default=28, help="the data's seed")
    parser.add_argument("--data", type=Path, default=None, help="where the set is written (default: a temp folder)")
    args = parser.parse_args()
    data = args.data or Path(tempfile.mkdtemp(prefix="knee-like-"))
    if not (data / "train").exists():
        write_knee_like(data, args.seed)
    cli = str(Path(sys.executable).parent / "automl-img")
    figures: dict = {"data": f"finedetail radiographs, seed {args.seed}", "budget_seconds": args.budget, "runs": {}}
    for name, extra in (("plain", []), ("ordinal", ["--ordinal"])):
        work = Path(tempfile.mkdtemp(prefix=f"ordinal-{name}-"))
        command = [cli, "search", str(data), "--study", name, "--trials", "100000", "--timeout", str(args.budget)]
        command += ["--seed", "0", *extra]
        started = time.monotonic()
        subprocess.run(command, cwd=work, check=True, stdout=subprocess.DEVNULL)
        searched = time.monotonic() - started
        subprocess.run([cli, "export-best", "--study", name], cwd=work, check=True, stdout=subprocess.DEVNULL)
        bundle = json.loads((work / "studies" / name / "export" / "bundle.json").read_text())
        test, calibration = bundle["test"], bundle["calibration"]
        matrix = np.array(test["confusion_matrix"])
        grades = np.arange(len(matrix))
        distance = np.abs(grades[:, None] - grades[None, :])
        figures["runs"][name] = {
            "command": " ".join(["automl-img", *command[1:]]),
            "search_seconds": round(searched),
            "objective": bundle["objective"],
            "members": [(m["trial"], m["image_size"], m["params"].get("targets")) for m in bundle["members"]],
            "test_images": test["images"],
            "test_accuracy": round(test["accuracy"], 4),
            "test_qwk": round(test["qwk"], 4),
            "test_mae": round(test["mae"], 4),
            "test_misses_by_two_or_more": int(matrix[distance >= 2].sum()),
            "test_ece_before_after": [
                round(calibration["test_ece_before"], 4),
                round(calibration["test_ece_after"], 4),
            ],
            "sets_contiguous": calibration["ordinal"],
            "test_coverage": round(calibration["test_coverage"], 4),
            "mean_set_size": round(calibration["mean_set_size"], 3),
        }
        print(name, figures["runs"][name], flush=True)
    plain, ordinal = figures["runs"]["plain"], figures["runs"]["ordinal"]
    figures["ordinal_minus_plain"] = {
        key: round(ordinal[key] - plain[key], 4) for key in ("test_accuracy", "test_qwk", "test_mae")
    }
    write_result(f"ordinal-{args.budget}s", figures)


if __name__ == "__main__":
    main()
