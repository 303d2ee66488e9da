"""Calibration and prediction sets of an exported bundle, measured on all 10,000 Fashion-MNIST test images.

    python benchmarks/calibration.py [--data fashion-mnist-6k-b] [--budget 600] [--coverage 0.9]

Runs `automl-img search DATA --timeout BUDGET --seed 0` and `automl-img export-best --coverage C` as a user
would (the temperature and the sets' threshold are fitted on the subset's val split), then scores the bundle
on the whole official test set, which no subset trains or validates on: expected calibration error of the
model's own probabilities and of the calibrated ones, the sets' coverage and mean size. With `--calibrate-on
test-half` the subset's own test slice is left out (half of it calibrated): 8,000 images are scored.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, write_result
from fashion_mnist import CLASSES, load
from slices import SUBSET_SLICE, slice_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist-6k-b")
    parser.add_argument("--budget", type=int, default=600, help="search seconds")
    parser.add_argument("--coverage", type=float, default=0.9)
    parser.add_argument(
        "--calibrate-on", default="val", help="val, or test-half (the subset's test slice is then left out)"
    )
    parser.add_argument("--reuse", type=Path, help="a folder where this script searched before: export again only")
    args = parser.parse_args()
    from automl_img.api import load_bundle
    from automl_img.data.decode import fit_image
    from automl_img.outputs.calibration import expected_calibration_error

    cli = str(Path(sys.executable).parent / "automl-img")
    work = args.reuse or Path(tempfile.mkdtemp(prefix="calibration-"))
    print(f"working in {work}", flush=True)
    started = time.monotonic()
    search = [cli, "search", str(DATA / args.data), "--study", "cal", "--trials", "100000"]
    search += ["--timeout", str(args.budget), "--seed", "0"]
    if not args.reuse:
        subprocess.run(search, cwd=work, check=True, stdout=subprocess.DEVNULL)
    export = [
        cli,
        "export-best",
        "--study",
        "cal",
        "--coverage",
        str(args.coverage),
        "--calibrate-on",
        args.calibrate_on,
    ]
    subprocess.run(export, cwd=work, check=True, stdout=subprocess.DEVNULL)
    bundle = load_bundle(work / "studies" / "cal" / "export")
    calibration = bundle.manifest.calibration
    assert calibration is not None

    images, labels = load("test")
    if args.calibrate_on == "test-half":  # half of the subset's test slice calibrated: score the other slices
        kept = np.ones(len(labels), bool)
        kept[slice_rows(labels)[SUBSET_SLICE[args.data]]] = False
        images, labels = images[kept], labels[kept]
    frame = bundle.predict(images[..., None])
    calibrated = frame[list(CLASSES)].to_numpy(dtype=np.float64)
    size = bundle.image_size
    fitted = np.stack([fit_image(image[..., None], size, 1) for image in images]) if size != 28 else images[..., None]
    columns = [bundle.class_names.index(name) for name in CLASSES]  # the bundle's class order is by name
    own = bundle.model_probabilities(fitted).astype(np.float64)[:, columns]
    names = np.array(CLASSES)
    sets = [set_text.split("|") for set_text in frame["set"]]
    covered = np.array([names[label] in held for label, held in zip(labels, sets)])
    sizes = np.array([len(held) for held in sets])
    figures = {
        "data": args.data,
        "search_command": " ".join(["automl-img", *search[1:]])
        + (" (searched before; exported again)" * bool(args.reuse)),
        "search_seconds": args.budget,
        "seconds_in_all": round(time.monotonic() - started),
        "members": [member.trial for member in bundle.manifest.members],
        "temperature": round(calibration.temperature, 4),
        "training_targets_untangled": calibration.targets is not None,
        "fitted_on": f"{calibration.fitted_on} ({calibration.calibration_images} images)",
        "own_test_split": {
            "images": calibration.test_images,
            "ece_before": round(calibration.test_ece_before, 4),
            "ece_after": round(calibration.test_ece_after, 4),
            "coverage": round(calibration.test_coverage, 4),
            "mean_set_size": round(calibration.mean_set_size, 3),
        },
        "calibrated_on": args.calibrate_on,
        "official_test_images": {
            "images": len(labels),
            "accuracy": round(float((calibrated.argmax(axis=1) == labels).mean()), 4),
            "ece_before": round(expected_calibration_error(own, labels), 4),
            "ece_after": round(expected_calibration_error(calibrated, labels), 4),
            "requested_coverage": args.coverage,
            "coverage": round(float(covered.mean()), 4),
            "mean_set_size": round(float(sizes.mean()), 3),
            "unsure_share": round(float((sizes > 1).mean()), 4),
            "coverage_of_sure_images": round(float(covered[sizes == 1].mean()), 4),
            "coverage_of_unsure_images": round(float(covered[sizes > 1].mean()), 4) if (sizes > 1).any() else None,
        },
    }
    print(figures)
    name = f"calibration-{args.data}-{args.budget}s" + (f"-coverage-{args.coverage}" * (args.coverage != 0.9))
    write_result(name + ("-test-half" * (args.calibrate_on == "test-half")), figures)


if __name__ == "__main__":
    main()
