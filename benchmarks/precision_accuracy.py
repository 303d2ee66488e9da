"""Does mixed precision cost accuracy? The same trial (blog-cnn's defaults at one image size) trained in float32
and in bfloat16 with two seeds each, each exported and scored on the test split, as a user would run it.

    python benchmarks/precision_accuracy.py [--data benchmarks/data/finedetail] [--image-size 128] [--epochs 12]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import DATA, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA / "finedetail")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--precisions", default="float32,bfloat16")
    args = parser.parse_args()
    from automl_img.outputs.bundle import BundleManifest
    from automl_img.study.handle import StoredStudy

    work = Path(tempfile.mkdtemp(prefix="precision-"))
    cli = str(Path(sys.executable).parent / "automl-img")
    runs = []
    for seed in args.seeds.split(","):
        for precision in args.precisions.split(","):  # interleaved: both precisions see the same machine state
            study = f"{precision}-{seed}"
            started = time.time()
            subprocess.run(
                [
                    cli,
                    "search",
                    str(args.data.resolve()),
                    "--study",
                    study,
                    "--trials",
                    "1",
                    "--epochs",
                    str(args.epochs),
                    "--seed",
                    seed,
                    "--precision",
                    precision,
                    "-p",
                    f"image_size={args.image_size}",
                    "--quiet",
                ],
                cwd=work,
                check=True,
            )
            seconds = time.time() - started
            subprocess.run([cli, "export-best", "--study", study], cwd=work, check=True, stdout=subprocess.DEVNULL)
            bundle = BundleManifest.read(work / "studies" / study / "export")
            trial = StoredStudy.open(study, f"sqlite:///{work}/studies/automl-img.db").trials()[0]
            runs.append(
                {
                    "precision": precision,
                    "seed": int(seed),
                    "trained_in": trial.precision,
                    "test_accuracy": bundle.test.accuracy,
                    "val_accuracy": bundle.val_scores["accuracy"],
                    "training_seconds": trial.seconds,
                    "search_seconds": round(seconds, 1),
                    "epochs_run": trial.epochs_run,
                }
            )
            print(runs[-1], flush=True)
    write_result(
        f"precision_accuracy-{args.data.name}-{args.image_size}px",
        {"data": str(args.data), "image_size": args.image_size, "epochs": args.epochs, "runs": runs},
    )


if __name__ == "__main__":
    main()
