"""Built-in export formats: Keras' native file, TensorFlow SavedModel, LiteRT (TFLite, also int8) and ONNX.

Each writes with Keras' own ``model.export`` where it serves, and loads back into a function
from a uint8 image batch to class probabilities, so export-best can check every format against
the Keras model and predict can use any of them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from automl_img.errors import AutomlImgError
from automl_img.hookspecs import Predictor, hookimpl
from automl_img.native_output import muted_stderr


@hookimpl
def register_exporters(register):
    register("keras", KerasFile())
    register("savedmodel", SavedModel())
    register("tflite", LiteRT())
    register("tflite-int8", QuantizedLiteRT())
    register("onnx", Onnx())


def _needs(module: str, extra: str = "export"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise AutomlImgError(f"this format needs {module}: pip install 'automl-img[{extra}]'") from None


class KerasFile:
    """Keras' native .keras file: architecture, weights and preprocessing layers in one zip."""

    file = "model.keras"

    def export(self, model, path: Path) -> None:
        model.save(path)

    def load(self, path: Path, safe_mode: bool = True) -> Predictor:
        from automl_img.tf_runtime import keras

        try:
            model = keras.saving.load_model(path, safe_mode=safe_mode)
        except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for a file it cannot rebuild
            if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
                raise AutomlImgError(
                    f"{path} contains code (a Lambda layer) that would run on load; if you trust where the "
                    "bundle came from, rerun with --unsafe"
                ) from None
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AutomlImgError(
                f"cannot load {path}: {first_line}; if it uses a plugin's custom layers, install that plugin"
            ) from None
        return _batched(model)


class SavedModel:
    """TensorFlow SavedModel folder, for TF Serving and converters; signature ``serve``."""

    file = "saved_model"

    def export(self, model, path: Path) -> None:
        model.export(str(path), format="tf_saved_model", verbose=False)

    def load(self, path: Path, safe_mode: bool = True) -> Predictor:
        from automl_img.tf_runtime import tf

        loaded = tf.saved_model.load(str(path))
        return lambda images: np.concatenate(
            [loaded.serve(tf.constant(images[i : i + 256])).numpy() for i in range(0, len(images), 256)]
        )


class LiteRT:
    """LiteRT (TensorFlow Lite) flatbuffer for phones and edge devices."""

    file = "model.tflite"

    def export(self, model, path: Path) -> None:
        model.export(str(path), format="litert", verbose=False)

    def load(self, path: Path, safe_mode: bool = True) -> Predictor:
        interpreter_module = _needs("ai_edge_litert.interpreter")
        with muted_stderr():  # the XNNPACK delegate announces itself on stderr
            interpreter = interpreter_module.Interpreter(model_path=str(path))
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

        def predict(images: np.ndarray) -> np.ndarray:
            interpreter.resize_tensor_input(source["index"], images.shape)
            with muted_stderr():
                interpreter.allocate_tensors()
            interpreter.set_tensor(source["index"], images.astype(source["dtype"]))
            interpreter.invoke()
            return interpreter.get_tensor(target["index"]).copy()

        return predict


class QuantizedLiteRT(LiteRT):
    """LiteRT with 8-bit weights and activations, calibrated on training images: about 4x smaller."""

    file = "model_int8.tflite"
    quantized = True  # checked by its accuracy on the test split, not by exact probabilities

    def export(self, model, path: Path, calibration_images: np.ndarray | None = None) -> None:
        from automl_img.tf_runtime import tf

        if calibration_images is None or not len(calibration_images):
            raise AutomlImgError("the int8 LiteRT format needs training images to calibrate on")

        def representative_images():
            for image in calibration_images:
                yield [image[np.newaxis]]

        model.export(
            str(path),
            format="litert",
            verbose=False,
            optimizations=[tf.lite.Optimize.DEFAULT],
            representative_dataset=representative_images,
        )


class Onnx:
    """ONNX model for onnxruntime and other runtimes (converted by tf2onnx through Keras)."""

    file = "model.onnx"

    def export(self, model, path: Path) -> None:
        _needs("tf2onnx")
        with warnings.catch_warnings():  # Keras' tf2onnx shim probes the removed np.object
            warnings.simplefilter("ignore", FutureWarning)
            model.export(str(path), format="onnx", verbose=False)

    def load(self, path: Path, safe_mode: bool = True) -> Predictor:
        runtime = _needs("onnxruntime")
        session = runtime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda images: session.run(None, {name: images})[0]


def _batched(model) -> Predictor:
    """The model on batches of 256, traced once for any batch size: ``model.predict`` traces again for each new
    batch size (and warns after a few), which a notebook that predicts many times in one process would show."""
    from automl_img.tf_runtime import tf

    forward = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    return lambda images: np.concatenate(
        [forward(images[start : start + 256]).numpy() for start in range(0, max(len(images), 1), 256)]
    )
