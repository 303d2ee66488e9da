"""Where in the image a bundle's model found the evidence for the class it predicts, two ways.

``occlusion`` (the default everywhere: ``predict --explain``, the report, ``Bundle.explain``) covers each part of
the image in turn and measures how far the class's log-odds fall. It asks the model itself, so it fits every
architecture and an average of members as it predicts, and it found the deciding mark in 86 % of test images
where Grad-CAM found it in 54 % (benchmarks/explain.py); it costs about 230 forward passes an image.

``grad_cam`` (Selvaraju et al. 2017, ``Bundle.explain(images, method="grad-cam")``) costs one backward pass. For
each averaged member (a model ``build_model`` wrapped: it holds a ``scale_to_unit`` layer), a map is the
ReLU of a spatial feature map weighted by the gradient of the predicted class's probability, averaged over the
positions. It is taken at the end of every stage of the network (the last feature map at each resolution), each
scaled to [0, 1] and averaged: the classic single map of the last stage is too coarse for a detail a few pixels
wide. The members' maps, at the bundle's image size, are averaged too. Feature maps are found in the
architecture's own graph, nested models included (a backbone inside ``features``).

Imports TensorFlow.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from automl_img.errors import AutomlImgError
from automl_img.tf_runtime import keras, tf

_NOT_FEATURE_MAPS = ("InputLayer", "Pooling", "Dropout", "Flatten", "Reshape", "Permute", "Rescaling")


def members(model: Any) -> list[Any]:
    """The trained models inside a bundle's model (itself, when it is not an average)."""
    names = {layer.name for layer in model.layers}
    if "scale_to_unit" in names:
        return [model]
    found: list[Any] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += [member for member in members(layer) if all(member is not seen for seen in found)]
    return found


def _feature_maps(model: Any) -> list[list[Any]]:
    """Paths (nested models, then the layer) to every layer whose output is a spatial feature map, in order, from
    the first layer with weights on (what comes before it, gray to RGB or scaling, only transforms the input)."""
    found: list[list[Any]] = []
    learned = False

    def walk(model: Any, within: tuple) -> None:
        nonlocal learned
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                walk(layer, (*within, layer))
                continue
            learned = learned or bool(layer.weights)
            shape: tuple = tuple(getattr(getattr(layer, "output", None), "shape", ()))
            spatial = len(shape) == 4 and (shape[1] or 0) > 1 and (shape[2] or 0) > 1
            if learned and spatial and not any(kind in type(layer).__name__ for kind in _NOT_FEATURE_MAPS):
                found.append([*within, layer])

    walk(model, ())
    return found


def stage_ends(model: Any) -> list[list[Any]]:
    """The last feature map at each resolution: the end of each stage of the network."""
    ends: dict[tuple[int, int], list[Any]] = {}
    for path in _feature_maps(model):
        ends[tuple(path[-1].output.shape[1:3])] = path
    return list(ends.values())


def _split(model: Any, path: list[Any]) -> Any:
    """A callable: ``model``'s input -> (the feature map at the end of ``path``, ``model``'s output)."""
    head, rest = path[0], path[1:]
    if not rest:
        return keras.Model(model.inputs, [head.output, model.output])
    for node in head._inbound_nodes:  # the call of the nested model inside this graph
        try:
            before = keras.Model(model.inputs, node.input_tensors)
            last = [a is b for a, b in zip(node.output_tensors, model.outputs)] == [True] * len(model.outputs)
            after = _identity if last else keras.Model(node.output_tensors, model.outputs)
        except ValueError:  # a call of it in another graph
            continue
        inner = _split(head, rest)

        def run(x: Any, before: Any = before, after: Any = after, inner: Any = inner) -> tuple[Any, Any]:
            features, output = inner(before(x))
            return features, after(output)

        return run
    raise AutomlImgError(f"cannot follow {head.name} inside {model.name} to explain it")


def _identity(x: Any) -> Any:
    return x


def _member_maps(member: Any, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Grad-CAM at the end of each of the member's stages, each scaled to [0, 1] at the member's size, averaged:
    the last, coarsest map alone points a few pixels wide detail at the wrong place (benchmarks/explain.py)."""
    size = member.input_shape[1]
    if images.shape[1] != size:  # a smaller member sees the images shrunk, as inside the average
        images = np.stack([_resized(image, size, cv2.INTER_AREA) for image in images])
    paths = stage_ends(member)
    if not paths:
        raise AutomlImgError(f"{member.name} has no spatial feature map to explain (no convolution)")
    pixels = tf.convert_to_tensor(images)
    total = np.zeros((len(images), size, size), dtype=np.float32)
    for path in paths:
        with tf.GradientTape() as tape:
            features, probabilities = _split(member, path)(pixels)
            scores = tf.gather(tf.cast(probabilities, tf.float32), classes, batch_dims=1)
        gradient = tape.gradient(scores, features)
        if gradient is None:  # a map the prediction does not depend on
            continue
        gradients = tf.cast(gradient, tf.float32)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        maps = tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1)).numpy()
        total += np.stack([_unit(_resized(cam, size, cv2.INTER_LINEAR)) for cam in maps])
    return total / len(paths)


def _resized(image: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    return resized.reshape(size, size, *image.shape[2:])


def _unit(cam: np.ndarray) -> np.ndarray:
    high = float(cam.max())
    return (cam / high if high > 0 else cam).astype(np.float32)


def grad_cam(model: Any, images: np.ndarray, classes: np.ndarray | None = None, batch: int = 64) -> np.ndarray:
    """(N, size, size) maps in [0, 1] for uint8 ``images`` of the model's input size; ``classes``: which class
    each map explains (default: the predicted one)."""
    if classes is None:  # called eagerly: model.predict would trace a function for every batch size
        classes = np.concatenate(
            [np.argmax(model(images[i : i + batch], training=False), axis=1) for i in range(0, len(images), batch)]
        )
    size = model.input_shape[1]
    maps = np.zeros((len(images), size, size), dtype=np.float32)
    found = members(model)
    for start in range(0, len(images), batch):
        chunk, wanted = images[start : start + batch], classes[start : start + batch]
        for member in found:
            cams = _member_maps(member, chunk, wanted)
            maps[start : start + batch] += np.stack([_resized(cam, size, cv2.INTER_LINEAR) for cam in cams])
    return np.stack([_unit(cam) for cam in maps])


def occlusion(model: Any, images: np.ndarray, classes: np.ndarray | None = None, grid: int = 16) -> np.ndarray:
    """(N, size, size) maps in [0, 1] by occlusion (Zeiler & Fergus 2014): how far the explained class's log-odds
    fall when a square an eighth of the image wide, moved in steps of ``size / grid``, covers each pixel with the
    image's mean grey (a map of zeros: no part lowers them). It asks the whole model, so an average of members is
    explained as it predicts. ``classes``: which class each map explains (default: the predicted one).

    Log-odds, not the probability: a confident model's probability hardly moves when one of two signs is covered
    (0.9999 -> 0.999) while its log-odds fall by what that sign added. Measured (benchmarks/explain.py): the same
    pointing game (0.856) and shortcut figures as the probability gave, and maps of re-initialised weights less
    like the trained model's (median Spearman 0.00-0.12 in three runs, against 0.17-0.19)."""
    size = model.input_shape[1]
    patch, stride = max(1, size // 8), max(1, size // grid)
    starts = sorted({*range(0, size - patch + 1, stride), size - patch})
    corners = [(top, left) for top in starts for left in starts]
    rows = max(32, min(512, 2**22 // (size * size)))  # occluded copies per call of the model: memory stays bounded

    def copies() -> Any:
        for image in images:
            fill = np.round(image.mean(axis=(0, 1))).astype(image.dtype)
            yield image
            for top, left in corners:
                copy = image.copy()
                copy[top : top + patch, left : left + patch] = fill
                yield copy

    outputs, waiting = [], []
    for copy in copies():
        waiting.append(copy)
        if len(waiting) == rows:
            outputs.append(np.asarray(model(np.stack(waiting), training=False), np.float32))
            waiting = []
    if waiting:
        outputs.append(np.asarray(model(np.stack(waiting), training=False), np.float32))
    probabilities = np.concatenate(outputs).reshape(len(images), len(corners) + 1, -1)
    maps = np.zeros((len(images), size, size), dtype=np.float32)
    for index, found in enumerate(probabilities):
        wanted = int(np.argmax(found[0])) if classes is None else int(classes[index])
        drops, covered = np.zeros((size, size), np.float32), np.zeros((size, size), np.float32)
        odds = _log_odds(found, wanted)
        for drop, (top, left) in zip(odds[0] - odds[1:], corners):
            drops[top : top + patch, left : left + patch] += drop
            covered[top : top + patch, left : left + patch] += 1
        maps[index] = _unit(np.maximum(drops / covered, 0))
    return maps


def _log_odds(probabilities: np.ndarray, wanted: int) -> np.ndarray:
    """Log-odds of class ``wanted`` in each row, against the sum of the other classes' probabilities rather than
    1 - p: a float32 softmax gives p = 1.0 exactly from a margin of ~17 on, while the others stay as small as
    1e-38, so a confident model's evidence is still told apart."""
    rows = probabilities.astype(np.float64)
    others = np.delete(rows, wanted, axis=1).sum(axis=1)
    return np.log(np.maximum(rows[:, wanted], 1e-38)) - np.log(np.maximum(others, 1e-38))


METHODS = {"occlusion": occlusion, "grad-cam": grad_cam}


def overlay(image: np.ndarray, cam: np.ndarray, strength: float = 0.45) -> np.ndarray:
    """The map in colour (JET: red where it looked most) over the image, at the image's own size; RGB uint8."""
    height, width = image.shape[:2]
    heat = cv2.applyColorMap((cv2.resize(cam, (width, height)) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
    return cv2.addWeighted(rgb, 1 - strength, cv2.cvtColor(heat, cv2.COLOR_BGR2RGB), strength, 0)
