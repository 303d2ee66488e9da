"""Training throughput: images/s per model, image size and precision, and the share of this machine's
float32 matrix-multiply peak it reaches.

Each model is built as a trial builds it (``training.build_model`` around the architecture, ``compile_for``,
the real uint8 pipeline with augmentation) on random pixels; precisions are interleaved, repeat by repeat, so
a ratio compares runs a few seconds apart. ``--models`` picks from MODELS (blog-cnn's parameters for each).

    python benchmarks/throughput.py                      # the default set, JSON in results/throughput.json
    python benchmarks/throughput.py --sizes 128 --models wide-2conv-bn --name throughput-old-default
    python benchmarks/throughput.py --sizes 128 --models wide-2conv-bn --keras-batch-norm --name throughput-keras-bn
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import numpy as np
from _common import write_result

RECIPE = {
    "convs_per_block": 1,
    "stem": "none",
    "batch_norm": False,
    "filters_1": 32,
    "filters_2": 32,
    "filters_3": 32,
    "filters_4": 64,
    "activations": "recipe",
    "head": "flatten",
    "dense_units": 64,
    "dropout": 0.4,
}
# blog-cnn's parameters per named model; "default" is trial 0 as the search builds it at that size.
MODELS: dict[str, dict] = {
    "default": {},
    "recipe": RECIPE,  # the blog's 4-block CNN
    "wide-2conv-bn": {
        "convs_per_block": 2,
        "stem": "none",
        "batch_norm": True,
        "filters_1": 32,
        "filters_2": 64,
        "filters_3": 128,
        "filters_4": 128,
    },  # the default before resolution-aware widths
    "wide-2conv": {
        "convs_per_block": 2,
        "stem": "none",
        "batch_norm": False,
        "filters_1": 32,
        "filters_2": 64,
        "filters_3": 128,
        "filters_4": 128,
    },
    "1conv-bn": {"convs_per_block": 1, "batch_norm": True},
}


def matmul_peak_gflops(seconds: float = 3.0) -> float:
    """float32 matrix multiply through numpy's BLAS: the compute ceiling of this machine."""
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ a
        count += 1
    return 2 * 2048**3 * count / (time.perf_counter() - started) / 1e9


def over_float32(speeds: dict[str, list[float]]) -> dict[str, float]:
    """Each low precision's median images/s over float32's, as "<precision>_over_float32" (none without float32)."""
    if "float32" not in speeds:
        return {}
    base = statistics.median(speeds["float32"])
    return {f"{p}_over_float32": round(statistics.median(v) / base, 2) for p, v in speeds.items() if p != "float32"}


def interleaved(
    measure_one: Callable[[str], tuple[float, float]], precisions: str, repeats: int
) -> tuple[dict[str, list[float]], float]:
    """Images/s per precision (comma-separated), ``repeats`` each, the precisions interleaved so that a ratio
    compares runs seconds apart; and the forward GFLOP per image that ``measure_one`` reports."""
    speeds: dict[str, list[float]] = {p: [] for p in precisions.split(",")}
    gflop = 0.0
    for _ in range(repeats):
        for precision in speeds:
            speed, gflop = measure_one(precision)
            speeds[precision].append(speed)
    return speeds, gflop


def measure(model_name: str, size: int, precision: str, batch: int, steps: int) -> tuple[float, float]:
    """Images/s of training for ``steps`` batches after one warm-up epoch; forward GFLOP per image."""
    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.models import precision as precisions
    from automl_img.models import training
    from automl_img.space import DefaultHyperParameters, sample_training_params
    from automl_img.tf_runtime import keras

    keras.backend.clear_session()
    precisions.apply(precision)
    hp = DefaultHyperParameters({**MODELS[model_name], "batch_size": batch})
    model = training.build_model(build_blog_cnn, hp, size, 1, 5)
    params = sample_training_params(hp, size)
    rows = batch * steps
    images = np.random.default_rng(0).integers(0, 256, (rows, size, size, 1), dtype=np.uint8)
    labels = np.random.default_rng(1).integers(0, 5, rows)
    training.compile_for(model, params, 2, steps)
    batches = training.batches(images, labels, np.arange(rows), batch, params, shuffle_seed=0)
    data = training._targets(batches, 5, params)
    model.fit(data, epochs=1, verbose=0)  # tracing, oneDNN's kernel choice
    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    model.fit(data, epochs=1, verbose=0, callbacks=[timer])
    # Steady state: from the first batch's end to the last's (an epoch's start and end add fixed costs).
    seconds = ends[-1] - ends[0]
    rows = batch * (len(ends) - 1)
    gflop = training.forward_gflop(model)
    precisions.apply("float32")
    return rows / seconds, gflop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,224")
    parser.add_argument("--models", default="recipe,default")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--name", default="throughput", help="results/NAME.json")
    parser.add_argument(
        "--keras-batch-norm",
        action="store_true",
        help="train batch norm with Keras' own code instead of the fused kernel automl-img uses",
    )
    args = parser.parse_args()
    from automl_img.models import fused_batch_norm
    from automl_img.models import precision as precisions
    from automl_img.tf_runtime import keras

    fused_batch_norm.install()  # as training does on import
    if args.keras_batch_norm:  # what every trial ran before automl_img/models/fused_batch_norm.py
        keras.layers.BatchNormalization.call = fused_batch_norm._keras_call
    peak = matmul_peak_gflops()
    print(f"numpy float32 matmul peak: {peak:.0f} GFLOP/s; auto precision here: {precisions.resolve('auto')}")
    rows = []
    for model_name in args.models.split(","):
        for size in map(int, args.sizes.split(",")):
            speeds, gflop = interleaved(
                functools.partial(measure, model_name, size, batch=args.batch, steps=args.steps),
                args.precisions,
                args.repeats,
            )
            row = {"model": model_name, "image_size": size, "forward_gflop_per_image": round(gflop, 3)}
            for precision, values in speeds.items():
                best = max(values)
                row[precision] = {
                    "images_per_s": [round(v, 1) for v in values],
                    # training costs about three forward passes (forward, two backward products)
                    "share_of_fp32_matmul_peak": round(3 * gflop * best / peak, 3),
                }
            row.update(over_float32(speeds))
            print(row, flush=True)
            rows.append(row)
    write_result(
        args.name,
        {
            "matmul_peak_gflops": round(peak, 1),
            "batch": args.batch,
            "steps": args.steps,
            "auto_precision": precisions.resolve("auto"),
            "batch_norm": "keras" if args.keras_batch_norm else "fused",
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
