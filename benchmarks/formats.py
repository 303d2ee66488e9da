"""Every export format of one bundle: file size, agreement with Keras, test accuracy and prediction latency.

    python benchmarks/formats.py BUNDLE_DIR [--name digits]

Searches nothing: give it a bundle exported with every format, e.g.
``automl-img export-best --format savedmodel,tflite,tflite-int8,onnx``. Latency is measured by the
formats' own loaders (what ``automl-img predict --format`` uses) on the bundle's test images, read
back from its test_predictions.csv (run it where export-best ran: those paths may be relative): one
image per call (a phone or a request handler) and batches of 256 (a folder), after a warm-up call,
median of repeated runs.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
from _common import write_result

BATCH = 256
SINGLE_CALLS = 200
REPEATS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--name", default=None, help="Result name (default: the bundle's study).")
    args = parser.parse_args()

    from automl_img.data import load_image
    from automl_img.outputs.bundle import BundleManifest
    from automl_img.plugins import load_plugins

    manifest = BundleManifest.read(args.bundle)
    with open(args.bundle / "test_predictions.csv", newline="", encoding="utf-8") as handle:
        files = [row["path"] for row in csv.DictReader(handle)]
    images = np.stack([load_image(file, manifest.image_size, manifest.channels) for file in files[:BATCH]])
    registry = load_plugins(third_party=False)
    keras_bytes = manifest.formats["keras"].bytes
    figures = {
        "study": manifest.study,
        "members": [m.trial for m in manifest.members],
        "image_sizes": [m.image_size for m in manifest.members],
        "test_images": manifest.test.images,
        "formats": {},
    }
    for name, check in manifest.formats.items():
        single, batched = latency(registry.exporter(name).load(args.bundle / check.file), images)
        figures["formats"][name] = {
            "file": check.file,
            "bytes": check.bytes,
            "size_vs_keras": round(check.bytes / keras_bytes, 3),
            "test_accuracy": check.test_accuracy,
            "accuracy_change_vs_keras": round(check.test_accuracy - manifest.formats["keras"].test_accuracy, 4),
            "same_class_fraction": check.same_class_fraction,
            "max_abs_probability_difference": check.max_abs_probability_difference,
            "check_ok": check.ok,
            "ms_per_image_one_at_a_time": round(1000 * statistics.median(single), 3),
            f"ms_per_image_in_batches_of_{BATCH}": round(1000 * statistics.median(batched), 4),
        }
        print(name, figures["formats"][name])
    # Keras' own model.predict, which the keras format's predictor used before it called the model directly.
    import keras

    model = keras.saving.load_model(args.bundle / manifest.formats["keras"].file)
    single, batched = latency(lambda batch: model.predict(batch, batch_size=BATCH, verbose=0), images)
    figures["keras_model_predict"] = {
        "ms_per_image_one_at_a_time": round(1000 * statistics.median(single), 3),
        f"ms_per_image_in_batches_of_{BATCH}": round(1000 * statistics.median(batched), 4),
    }
    print("keras model.predict", figures["keras_model_predict"])
    write_result(f"formats-{args.name or manifest.study}", figures)


def latency(predict, images: np.ndarray) -> tuple[list[float], list[float]]:
    """Seconds per image, one image per call and in one batch, each over ``REPEATS`` runs."""
    predict(images[:1])  # warm-up: graph tracing, interpreter allocation
    single = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for index in range(SINGLE_CALLS):
            predict(images[index % len(images)][np.newaxis])
        single.append((time.perf_counter() - started) / SINGLE_CALLS)
    batched = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        predict(images)
        batched.append((time.perf_counter() - started) / len(images))
    return single, batched


if __name__ == "__main__":
    main()
