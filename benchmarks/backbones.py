"""What a pretrained backbone costs on this machine: computing features (once per image, what head-only
trials then reuse) and training when its top layers are fine-tuned, at each image size.

    python benchmarks/backbones.py [--images 1024]

Weights are the real ones for efficientnet-lite0 and random for the keras.applications networks (their
ImageNet download is impossible here; speed does not depend on the values). Grayscale 28 px-like data:
1 channel, repeated to three inside the model, as a Fashion-MNIST study does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result

ARCHITECTURES = {
    "efficientnet-lite0": None,
    "mobilenet-v3-small": "MobileNetV3Small",
    "efficientnet-b0": "EfficientNetB0",
}
SIZES = (64, 96, 128, 224)
FINE_TUNE = ((96, 0.1), (96, 0.4), (224, 0.1))  # (image size, share of layers trained)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args()

    from automl_img.models import training
    from automl_img.models.families import Families
    from automl_img.plugins import load_plugins
    from automl_img.space import DefaultHyperParameters
    from automl_img.tf_runtime import keras

    registry = load_plugins(third_party=False)
    folder = Path(tempfile.mkdtemp(prefix="backbones-"))
    rng = np.random.default_rng(0)
    figures: dict[str, dict] = {}
    for name, constructor in ARCHITECTURES.items():
        overrides: dict = {}
        if constructor:
            weights = folder / f"{constructor}.weights.h5"
            getattr(keras.applications, constructor)(
                include_top=False, weights=None, input_shape=(96, 96, 3), pooling="avg"
            ).save_weights(weights)
            overrides["weights"] = str(weights)
        build = registry.architecture(name)
        entry: dict = {"features_images_per_second": {}, "fine_tune_images_per_second": {}}
        for size in SIZES:
            model, _ = training.build_for_trial(
                Families.single(build, [size]), DefaultHyperParameters({**overrides, "fine_tune_share": 0.0}), 1, 10
            )
            extractor = training.backbone_parts(model).extractor
            images = rng.integers(0, 256, (args.images, size, size, 1), dtype=np.uint8)
            extractor.predict(images[:128], batch_size=128, verbose=0)  # warm-up: tracing
            started = time.perf_counter()
            extractor.predict(images, batch_size=128, verbose=0)
            entry["features_images_per_second"][str(size)] = round(args.images / (time.perf_counter() - started), 1)
            keras.backend.clear_session()
        entry["weights"] = int(sum(np.prod(w.shape) for w in training.backbone_parts(model).backbone.weights))
        for size, share in FINE_TUNE:
            model, params = training.build_for_trial(
                Families.single(build, [size]), DefaultHyperParameters({**overrides, "fine_tune_share": share}), 1, 10
            )
            images = rng.integers(0, 256, (args.images // 2, size, size, 1), dtype=np.uint8)
            labels = rng.integers(0, 10, len(images))
            training.compile_for(model, params, 2, len(images) // params.batch_size, params.fine_tune_learning_rate)
            dataset = training._targets(
                training.batches(images, labels, np.arange(len(images)), params.batch_size, params, shuffle_seed=0),
                10,
                params,
            )
            model.fit(dataset.take(2), epochs=1, verbose=0)  # warm-up: tracing
            started = time.perf_counter()
            model.fit(dataset, epochs=1, verbose=0)
            rate = len(images) / (time.perf_counter() - started)
            entry["fine_tune_images_per_second"][f"{size}px-share-{share}"] = round(rate, 1)
            keras.backend.clear_session()
        figures[name] = entry
        print(name, entry)
    write_result("backbones", {"images": args.images, "channels": 1, **figures})


if __name__ == "__main__":
    main()
