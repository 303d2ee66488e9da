"""Training images/s of the search's networks on a GPU machine without TensorFlow: Keras 3 on JAX.

The GPU machine this project is sometimes lent (the device tool: one NVIDIA H200) has JAX and PyTorch but no
TensorFlow and no package registry, and TensorFlow with its CUDA libraries is some gigabytes, far over the
64 MiB that may travel there. automl-img's trials (the tf.data pipeline, TensorFlow augmentation, the fused
batch norm) cannot run there, so ``benchmarks/gpu_check.sh``'s search cannot either. What can run is the part
that costs the arithmetic: the same networks, built by the same builder (blog-cnn with trial 0's parameters at
each size, as ``throughput.py`` builds them, and the blog's recipe), wrapped as ``training.build_model`` wraps
them (uint8 in, scaled inside, a float32 softmax), compiled with AdamW and label-smoothed cross-entropy, and
trained by Keras' own ``fit`` on random pixels, in each precision policy. No augmentation (TensorFlow ops).

    KERAS_BACKEND=jax python benchmarks/gpu_throughput.py      # JSON in results/throughput-gpu.json

Compare with ``results/throughput.json`` (this project's CPU, TensorFlow, the real pipeline).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, uninstalled

import numpy as np
from _common import write_result
from throughput import MODELS, interleaved, over_float32

_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def accelerator() -> dict:
    """The device Keras trains on, and its compute capability where JAX reports one."""
    import jax

    device = jax.devices()[0]
    capability = getattr(device, "compute_capability", None)
    return {"platform": device.platform, "name": device.device_kind, "compute_capability": capability}


def bf16_matmul_peak_tflops(n: int = 8192, repeats: int = 10) -> float:
    """An n x n x n bfloat16 matrix product through JAX: the card's matrix ceiling, for the shares below."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.bfloat16)
    product = jax.jit(lambda x: x @ x)
    for _ in range(3):
        product(a).block_until_ready()
    started = time.perf_counter()
    for _ in range(repeats):
        product(a).block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e12


def measure(model_name: str, size: int, precision: str, batch: int, steps: int) -> tuple[float, float]:
    """Images/s of training for ``steps`` batches after one warm-up epoch; forward GFLOP per image."""
    import keras

    from automl_img.default_plugins.blog_cnn import build_blog_cnn
    from automl_img.space import DefaultHyperParameters, sample_training_params

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(_POLICIES[precision])
    hp = DefaultHyperParameters({**MODELS[model_name], "batch_size": batch})
    shape = (size, size, 1)
    inputs = keras.Input(shape, dtype="uint8")
    body = build_blog_cnn(hp, shape, 5)
    outputs = body(keras.layers.Rescaling(1.0 / 255.0)(inputs))
    if keras.backend.standardize_dtype(outputs.dtype) != "float32":
        outputs = keras.layers.Activation("linear", dtype="float32")(outputs)
    model = keras.Model(inputs, outputs)
    params = sample_training_params(hp, size)
    model.compile(
        optimizer=keras.optimizers.AdamW(params.learning_rate, weight_decay=params.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing),
    )
    rows = batch * steps
    images = np.random.default_rng(0).integers(0, 256, (rows, *shape), dtype=np.uint8)
    labels = np.eye(5, dtype=np.float32)[np.random.default_rng(1).integers(0, 5, rows)]
    model.fit(images, labels, batch_size=batch, epochs=1, verbose=0)  # compilation
    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    model.fit(images, labels, batch_size=batch, epochs=1, verbose=0, callbacks=[timer])
    # JAX dispatches ahead of the device: the clock stops once the last update has been computed.
    np.asarray(keras.ops.convert_to_numpy(model.trainable_variables[0]))
    finished = time.perf_counter()
    keras.mixed_precision.set_global_policy("float32")
    gflop = 2 * sum(_macs(layer) for layer in body.layers) / 1e9
    return batch * (len(ends) - 1) / (finished - ends[0]), gflop


def _macs(layer) -> int:
    """Multiply-adds per image of a convolution or dense layer (the rest is small)."""
    if hasattr(layer, "kernel_size"):
        height, width, channels = layer.output.shape[1:]
        return int(height * width * channels * np.prod(layer.kernel.shape[:-1]))
    if hasattr(layer, "units"):
        return int(np.prod(layer.kernel.shape))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,224")
    parser.add_argument("--models", default="default,recipe")
    parser.add_argument("--precisions", default="float32,bfloat16,float16")
    parser.add_argument("--batches", default="64,256", help="64 is the search's default batch size")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--name", default="throughput-gpu", help="results/NAME.json")
    args = parser.parse_args()
    import keras

    from automl_img.models.precision import resolve

    device = accelerator()
    capability = device["compute_capability"]
    gpus = [tuple(int(part) for part in str(capability).split("."))] if capability else None
    device["auto_precision"] = resolve("auto", gpus)
    peak = bf16_matmul_peak_tflops() if device["platform"] == "gpu" else None
    print(f"Keras {keras.__version__} on {keras.backend.backend()}: {device}; bf16 matmul {peak} TFLOP/s", flush=True)
    rows = []
    for batch in map(int, args.batches.split(",")):
        for model_name in args.models.split(","):
            for size in map(int, args.sizes.split(",")):
                speeds, gflop = interleaved(
                    functools.partial(measure, model_name, size, batch=batch, steps=args.steps),
                    args.precisions,
                    args.repeats,
                )
                row: dict = {"model": model_name, "image_size": size, "batch": batch, "forward_gflop": round(gflop, 3)}
                for precision, values in speeds.items():
                    row[precision] = [round(v, 1) for v in values]
                    if peak:  # training costs about three forward passes
                        row[f"{precision}_share_of_bf16_peak"] = round(3 * gflop * max(values) / (peak * 1e3), 4)
                row.update(over_float32(speeds))
                print(row, flush=True)
                rows.append(row)
    write_result(
        args.name,
        {
            "backend": f"keras {keras.__version__} on {keras.backend.backend()}",
            "device": device,
            "bf16_matmul_tflops": round(peak, 1) if peak else None,
            "steps": args.steps,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
