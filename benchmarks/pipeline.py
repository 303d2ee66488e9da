"""Throughput: decoding (cold vs cached) and training (automl-img's input pipeline vs a bare model.fit).

    python benchmarks/pipeline.py [--epochs 3] [--repeats 3]

On the Fashion-MNIST 6k subset at 28 px (write it first with benchmarks/fashion_mnist.py):
- decode: images/s of the first decode (1 thread and all cores) and of a later, cached load;
- training: images/s of model.fit on in-memory arrays ("bare") and of automl-img's pipeline over
  the memory-mapped cache, without augmentation, at batch 32 and 128; overhead = bare/ours - 1;
- augmentation: images/s with each augmentation alone at the recipe's strength, all of them fused
  (automl-img), and the same four as Keras preprocessing layers.
Every training figure is the median of --repeats runs, interleaved, each on a fresh model after
one warm-up epoch.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, write_result

RECIPE_ARCH = {
    "activations": "recipe",
    "filters_1": 32,
    "filters_2": 32,
    "filters_3": 32,
    "filters_4": 64,
    "batch_norm": False,
    "dropout": 0.4,
    "dense_units": 64,
}


def decode_figures(cache_root: Path) -> tuple[dict, object]:
    from automl_img.data import ImageCache, list_image_folder

    image_set = list_image_folder(DATA / "fashion-mnist-6k")
    figures = {"images": len(image_set)}
    for workers in (1, None):
        shutil.rmtree(cache_root, ignore_errors=True)
        cache = ImageCache(cache_root, image_set, workers=workers)
        started = time.perf_counter()
        cache.load(28, 1)
        figures[f"cold_images_per_s_{workers or 'all'}_threads"] = round(
            len(image_set) / (time.perf_counter() - started)
        )
    started = time.perf_counter()
    decoded = ImageCache(cache_root, image_set).load(28, 1)  # a new run: only the memory map opens
    int(np.asarray(decoded.images).sum())  # and every pixel is read once
    figures["cached_images_per_s"] = round(len(image_set) / (time.perf_counter() - started))
    figures["cached_vs_cold_speedup"] = round(
        figures["cached_images_per_s"] / figures["cold_images_per_s_all_threads"], 1
    )
    return figures, (decoded, image_set)


def images_per_second(fit, epochs: int, count: int) -> float:
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import training
    from automl_img.space import StoredHyperParameters
    from automl_img.tf_runtime import keras

    keras.backend.clear_session()
    model = training.build_model(build_blog_cnn, StoredHyperParameters(RECIPE_ARCH), 28, 1, 10)
    # the pipeline's cost only
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    fit(model, 1)
    started = time.perf_counter()
    fit(model, epochs)
    return epochs * count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cache_root = Path(tempfile.mkdtemp(prefix="pipeline-cache-"))
    decode, (decoded, image_set) = decode_figures(cache_root)

    from automl_img.models import training
    from automl_img.space import TrainingParams
    from automl_img.tf_runtime import keras, tf

    rows = np.flatnonzero(np.array([p.startswith("train/") for p in image_set.paths]))
    images, labels = decoded.images, image_set.labels
    in_memory_x, in_memory_y = np.asarray(images[rows]), labels[rows]

    def bare(batch):
        return lambda model, epochs: model.fit(
            in_memory_x, in_memory_y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0
        )

    def ours(batch, **augment):
        params = TrainingParams(
            28,
            batch,
            1e-3,
            0.0,
            0.0,
            **{
                "rotation": 0.0,
                "zoom": 0.0,
                "width_shift": 0.0,
                "height_shift": 0.0,
                "horizontal_flip": False,
                **augment,
            },
        )
        return lambda model, epochs: model.fit(
            training.batches(images, labels, rows, batch, params, shuffle_seed=0),
            epochs=epochs,
            verbose=0,
            shuffle=False,
        )

    def keras_layers(batch):
        layers = keras.Sequential(
            [
                keras.layers.RandomRotation(30 / 360, fill_mode="nearest"),
                keras.layers.RandomZoom(0.2, fill_mode="nearest"),
                keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest"),
                keras.layers.RandomFlip("horizontal"),
            ]
        )

        def fit(model, epochs):
            dataset = tf.data.Dataset.from_tensor_slices((in_memory_x, in_memory_y)).shuffle(len(rows)).batch(batch)
            dataset = dataset.map(
                lambda x, y: (tf.cast(layers(tf.cast(x, tf.float32), training=True), tf.uint8), y),
                num_parallel_calls=tf.data.AUTOTUNE,
            ).prefetch(tf.data.AUTOTUNE)
            model.fit(dataset, epochs=epochs, verbose=0)

        return fit

    recipe = {"rotation": 30.0, "zoom": 0.2, "width_shift": 0.1, "height_shift": 0.1, "horizontal_flip": True}
    configs = {f"bare_batch{b}": bare(b) for b in (32, 128)}
    configs.update({f"ours_batch{b}": ours(b) for b in (32, 128)})
    configs.update({f"augment_{name}_batch32": ours(32, **{name: value}) for name, value in recipe.items()})
    configs["augment_all_fused_batch32"] = ours(32, **recipe)
    configs["augment_all_keras_layers_batch32"] = keras_layers(32)
    speeds: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, fit in configs.items():
            speeds[name].append(images_per_second(fit, args.epochs, len(rows)))
            print(f"{name}: {speeds[name][-1]:.0f} images/s", flush=True)
    median = {name: round(statistics.median(values)) for name, values in speeds.items()}
    training_figures = {"images_per_s": median, "train_images": len(rows), "epochs_timed": args.epochs}
    for batch in (32, 128):
        training_figures[f"pipeline_overhead_batch{batch}_percent"] = round(
            100 * (median[f"bare_batch{batch}"] / median[f"ours_batch{batch}"] - 1), 1
        )
    training_figures["augmentation_cost_percent_vs_none"] = {
        name.removeprefix("augment_").removesuffix("_batch32"): round(100 * (median["ours_batch32"] / value - 1), 1)
        for name, value in median.items()
        if name.startswith("augment_")
    }
    shutil.rmtree(cache_root, ignore_errors=True)
    write_result("pipeline", {"decode": decode, "training": training_figures})


if __name__ == "__main__":
    main()
