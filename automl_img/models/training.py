"""One trial's training: the model around an architecture, the input pipeline, the per-epoch watch.

Imports TensorFlow: import this module only where training or inference really happens.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from automl_img.atomic import atomic_path
from automl_img.errors import PluginError, TrialFailed
from automl_img.models import compile_only, fused_batch_norm
from automl_img.models.augment import augment as augmented
from automl_img.models.efficientnet_lite import download_failure
from automl_img.models.families import Families
from automl_img.models.metrics import OBJECTIVES, scores
from automl_img.space import (
    ArchitectureHyperParameters,
    HyperParameters,
    Stage,
    TrainingParams,
    sample_image_size,
    sample_training_params,
)
from automl_img.study.records import EpochRow
from automl_img.tf_runtime import keras, tf

fused_batch_norm.install()  # training's batch norm through TensorFlow's fused kernel (module docstring there)

PREDICT_BATCH = 256
WARMUP_SHARE = 10  # the learning rate warms up over one epoch, or a tenth of the steps when that is less
# Rows of pixels up to this size are batched inside the graph; larger sets stream from the memory map.
IN_MEMORY_BYTES = 1 << 30
# Batch norm's moving statistics are estimated again from this many unaugmented training images (at most a quarter
# of them) before each epoch is scored: see ``reestimate_batch_norm``.
BATCH_NORM_IMAGES = 1024
ORDINAL_TARGET_SHARPNESS = 2.0  # the true grade's target 0.79 between two neighbours, 0.11 each; 0.88 at an end


class Reporter(Protocol):
    """The part of an Optuna trial that training talks to."""

    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...


def build_model(
    build: Callable[..., Any],
    hp: HyperParameters,
    image_size: int,
    channels: int,
    num_classes: int,
    name: str | None = None,
    family: str = "",
):
    """Wrap an architecture: uint8 pixels in, scaled to [0, 1] inside the model, probabilities out. The
    architecture declares its parameters under ``family`` where the search has the same names.

    ``train`` and ``refit`` compile it, with a schedule fitted to the epochs they are given.
    """
    shape = (image_size, image_size, channels)
    inputs = keras.Input(shape, dtype="uint8", name="image")
    scaled = keras.layers.Rescaling(1.0 / 255.0, name="scale_to_unit")(inputs)
    try:
        view = ArchitectureHyperParameters(hp, family, compile_only.not_searched(build, shape, num_classes, family))
        with compile_only.watched():  # a build's own compile is skipped: the recipe compiles
            body = build(view, shape, num_classes)
    except Exception as exc:  # KerasTuner's HyperEfficientNet downloads ImageNet weights, for one
        failure = download_failure(exc, family or "the architecture")
        if failure is None:
            raise
        raise failure from None
    if not isinstance(body, keras.Model):
        raise PluginError(f"the architecture's build() returned {type(body).__name__}, not a keras.Model")
    outputs = body(scaled)
    low_precision = keras.backend.standardize_dtype(outputs.dtype) != "float32"
    if low_precision:  # mixed precision, and the architecture's last layer is not float32: the loss in float32
        outputs = keras.layers.Activation("linear", dtype="float32", name="probabilities_float32")(outputs)
    model = keras.Model(inputs, outputs, name=name or body.name)
    # A softmax computed in bfloat16 sums to 1 within its 8-bit mantissa only.
    _check_outputs_are_probabilities(model, shape, num_classes, tolerance=2e-2 if low_precision else 1e-3)
    return model


def build_for_trial(
    architectures: Families,
    hp: HyperParameters,
    channels: int,
    num_classes: int,
    name: str | None = None,
    ordinal: bool = False,
) -> tuple[Any, TrainingParams]:
    """The trial's model and its training parameters: which of them exist depends on the family and on how
    the model trains (``stage_of``), so the family is declared first, then the image size, the architecture's
    own parameters, and the rest."""
    family = architectures.choose(hp)
    image_size = sample_image_size(hp, family.image_sizes, family.size_parameter)
    model = build_model(family.build, hp, image_size, channels, num_classes, name, family.name)
    return model, sample_training_params(hp, image_size, stage_of(model), ordinal)


@dataclass(frozen=True)
class BackboneParts:
    """A model whose architecture is a sub-model named ``features`` (a pretrained backbone) followed by one
    named ``head``: while the backbone is frozen, training it is training the head on fixed features."""

    model: Any  #: the whole model, as ``build_model`` wrapped it
    backbone: Any  #: the ``features`` sub-model
    head: Any  #: features -> class probabilities; its layers are the model's own

    @functools.cached_property
    def extractor(self):
        """uint8 images -> the backbone's features, the model's own input scaling included (built when needed)."""
        scaled = self.model.get_layer("scale_to_unit").output
        return keras.Model(self.model.input, self.backbone(scaled), name="extractor")


def backbone_parts(model) -> BackboneParts | None:
    """The parts of a model ``build_model`` wrapped, or None where its architecture has no such parts."""
    body = model.layers[-1]
    names = {layer.name for layer in getattr(body, "layers", [])}
    if not {"features", "head"} <= names:
        return None
    return BackboneParts(model, body.get_layer("features"), body.get_layer("head"))


def leaf_layers(model) -> list:
    """Every layer that holds weights, nested models flattened, from input to output."""
    found = []
    for layer in model.layers:
        found.extend(leaf_layers(layer) if hasattr(layer, "layers") else [layer] if layer.weights else [])
    return found


def stage_of(model) -> str:
    """``Stage.HEAD`` for a frozen backbone, ``Stage.FINE_TUNE`` when some of its layers train, else FULL."""
    parts = backbone_parts(model)
    if parts is None:
        return Stage.FULL
    return Stage.FINE_TUNE if parts.backbone.trainable_weights else Stage.HEAD


def compile_for(
    model, params: TrainingParams, epochs: int, steps_per_epoch: int, learning_rate: float | None = None
) -> None:
    """The recipe: AdamW under a learning rate that warms up, then follows a cosine to zero at the end of
    the last epoch ("Budgeted Training", ICLR 2020: a schedule fitted to the budget makes a short training
    a complete one), and cross-entropy with label smoothing on the softmax outputs.

    Weight decay skips biases and batch-norm scales and offsets, as is usual.
    """
    peak = learning_rate or params.learning_rate
    total = max(1, epochs * steps_per_epoch)
    warmup = min(steps_per_epoch, total // WARMUP_SHARE)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else peak,
        decay_steps=max(1, total - warmup),
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )
    optimizer = keras.optimizers.AdamW(schedule, weight_decay=params.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(
        optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing)
    )
    # Built here, as Keras does only under a distribution strategy: built inside the first train step, its
    # variables make TensorFlow trace that step twice (about a second per trial on a small CNN).
    model.optimizer.build(model.trainable_variables)


def ordinal_targets(num_classes: int) -> np.ndarray:
    """Soft ordinal labels (SORD; Diaz & Marathe, CVPR 2019): row ``y`` is softmax(-s (k - y)^2) over grades
    ``k``, so a prediction one grade off costs less than one far off; any softmax classifier trains on them."""
    grades = np.arange(num_classes, dtype=np.float64)
    logits = -ORDINAL_TARGET_SHARPNESS * (grades[None, :] - grades[:, None]) ** 2
    targets = np.exp(logits)
    return (targets / targets.sum(axis=1, keepdims=True)).astype(np.float32)


def target_matrix(num_classes: int, params: TrainingParams) -> np.ndarray:
    """Row ``y``: what the loss pulls the probabilities of an image of class ``y`` towards, label smoothing
    included (Keras mixes ``label_smoothing / classes`` into every target). A model trained to convergence
    outputs ``p @ target_matrix`` for true class probabilities ``p``, which calibration undoes."""
    smoothing = params.label_smoothing
    return (1 - smoothing) * _unsmoothed_targets(num_classes, params) + smoothing / num_classes


def _unsmoothed_targets(num_classes: int, params: TrainingParams) -> np.ndarray:
    return ordinal_targets(num_classes) if params.ordinal_targets else np.eye(num_classes, dtype=np.float32)


def _targets(dataset, num_classes: int, params: TrainingParams):
    """One-hot or soft targets; Keras' loss smooths them (its class weights read them back with argmax)."""
    matrix = tf.constant(_unsmoothed_targets(num_classes, params))
    return dataset.map(lambda x, y: (x, tf.gather(matrix, y)), num_parallel_calls=tf.data.AUTOTUNE)


def ensemble(members: list) -> Any:
    """One model that averages the members' class probabilities (a single member is returned as it is).

    It takes images at the largest member's size; a smaller member sees them shrunk inside the model
    by area interpolation and rounded to uint8: from images decoded at their own size, the pixels
    OpenCV's INTER_AREA gives it (measured exact); from images already shrunk, within one grey level.
    Members are called with ``training=False``: behind a resizing layer, Keras would otherwise export
    their dropout active.
    """
    if len(members) == 1:
        return members[0]
    size = max(member.input_shape[1] for member in members)
    inputs = keras.Input((size, size, members[0].input_shape[3]), dtype="uint8", name="image")
    outputs = []
    for member in members:
        own = member.input_shape[1]
        pixels = inputs if own == size else _area_shrink(inputs, size, own, member.name)
        outputs.append(member(pixels, training=False))
    return keras.Model(inputs, keras.layers.Average(name="average")(outputs), name="ensemble")


def as_trained(model, params: TrainingParams):
    """The model as it is scored and exported: a model trained on mirrored images averages its
    probabilities over each image and its mirror image (test-time augmentation); others as they are."""
    if not params.horizontal_flip:
        return model
    inputs = keras.Input(model.input_shape[1:], dtype="uint8", name="image")
    mirrored = _fixed_matrix_on_axis(
        inputs, np.eye(model.input_shape[2], dtype=np.float32)[::-1], 2, f"{model.name}_mirror"
    )
    outputs = keras.layers.Average(name=f"{model.name}_and_mirror")(
        [model(inputs, training=False), model(mirrored, training=False)]
    )
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_averaged")


def area_weights(size: int, own: int) -> np.ndarray:
    """The (own, size) matrix of area interpolation along one axis: each output pixel averages the input
    pixels its box covers, each weighted by the share of it that lies in the box (OpenCV's INTER_AREA)."""
    scale = size / own
    weights = np.zeros((own, size), dtype=np.float64)
    for out in range(own):
        start, end = out * scale, (out + 1) * scale
        for pixel in range(int(np.floor(start)), min(int(np.ceil(end)), size)):
            weights[out, pixel] = min(end, pixel + 1) - max(start, pixel)
    return (weights / scale).astype(np.float32)


def _area_shrink(inputs, size: int, own: int, name: str):
    """Area interpolation as two fixed matrix products (built-in layers only), then + 0.5 so the member's
    uint8 input rounds: every export format can express it, unlike ResizeArea, which LiteRT lacks and
    tf2onnx translates to a different resize."""
    weights = area_weights(size, own).T  # (size, own): a Dense kernel over the last axis
    x = _fixed_matrix_on_axis(inputs, weights, 2, f"{name}_width")
    x = _fixed_matrix_on_axis(x, weights, 1, f"{name}_height")
    return keras.layers.Rescaling(1.0, offset=0.5, name=f"{name}_round")(x)


def _fixed_matrix_on_axis(x, matrix: np.ndarray, axis: int, name: str):
    """``x`` (batch, height, width, channels) times a fixed (in, out) matrix along the height (1) or width (2):
    a non-trainable Dense between two Permutes, built-in layers that every export format can express."""
    order = (1, 3, 2) if axis == 2 else (3, 2, 1)  # that axis last, and back: each order is its own inverse
    x = keras.layers.Rescaling(1.0, name=f"{name}_to_float")(x)
    x = keras.layers.Permute(order, name=f"{name}_last")(x)
    layer = keras.layers.Dense(matrix.shape[1], use_bias=False, trainable=False, name=f"{name}_matrix")
    x = layer(x)
    layer.set_weights([matrix])
    return keras.layers.Permute(order, name=f"{name}_back")(x)


def forward_gflop(model) -> float:
    """GFLOP of one image's forward pass through the convolutions and dense layers (the rest is small): with the
    images and epochs, what a trial's training costs, whatever its size and width."""
    total = 0.0
    for layer in leaf_layers(model):
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D"):  # kernel (h, w, in, out or multiplier) at every output position
            total += 2 * math.prod(layer.output.shape[1:3]) * math.prod(layer.kernel.shape)
        elif kind == "Dense":
            total += 2 * math.prod(layer.kernel.shape)
    return total / 1e9


def _check_outputs_are_probabilities(
    model, shape: tuple[int, int, int], num_classes: int, tolerance: float = 1e-3
) -> None:
    probe = np.random.default_rng(0).integers(0, 256, size=(2, *shape), dtype=np.uint8)
    outputs = np.asarray(model(probe, training=False))
    if outputs.shape != (2, num_classes):
        raise PluginError(f"the architecture outputs shape {outputs.shape[1:]}, expected ({num_classes},) class scores")
    if not np.all(np.isfinite(outputs)):
        raise PluginError(
            "the untrained model already outputs NaN or infinity; check the architecture's initialisers and layers"
        )
    if not (np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=tolerance)):
        raise PluginError("the architecture must end in a softmax (its outputs are not probabilities)")


def batches(
    images: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
    augment: TrainingParams | None = None,
    shuffle_seed: int | None = None,
):
    """A tf.data pipeline over uint8 rows of a (memory-mapped) array, shuffled and augmented on request.

    Rows that fit in IN_MEMORY_BYTES are copied into a tensor once and batched inside the graph,
    as ``model.fit`` does with arrays; larger sets stream from the memory map through Python.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) * math.prod(images.shape[1:]) <= IN_MEMORY_BYTES:
        dataset = _in_memory(images, labels, rows, batch_size, shuffle_seed)
    else:
        dataset = _streamed(images, labels, rows, batch_size, shuffle_seed)
    if augment is not None and augment.augments:
        # Each batch has its own seed from a seeded stream: batches augmented in parallel draw the
        # same values whatever order they run in, and every epoch draws new ones.
        seeds = tf.data.Dataset.random(seed=shuffle_seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda batch, seed: (augmented(batch[0], augment, seed), batch[1]), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _in_memory(images: np.ndarray, labels: np.ndarray, rows: np.ndarray, batch_size: int, shuffle_seed: int | None):
    pixels, targets = tf.constant(images[rows]), tf.constant(labels[rows])
    order = tf.data.Dataset.range(len(rows))
    if shuffle_seed is not None:
        order = order.shuffle(len(rows), seed=shuffle_seed, reshuffle_each_iteration=True)
    return order.batch(batch_size).map(
        lambda picked: (tf.gather(pixels, picked), tf.gather(targets, picked)), num_parallel_calls=tf.data.AUTOTUNE
    )


def _streamed(images: np.ndarray, labels: np.ndarray, rows: np.ndarray, batch_size: int, shuffle_seed: int | None):
    rng = np.random.default_rng(shuffle_seed)

    def generate():
        order = rng.permutation(rows) if shuffle_seed is not None else rows
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            if shuffle_seed is not None:
                chunk = np.sort(chunk)  # ascending reads from the memory map; batch order is irrelevant
            yield images[chunk], labels[chunk]

    spec = (tf.TensorSpec((None, *images.shape[1:]), tf.uint8), tf.TensorSpec((None,), tf.int64))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=spec)
    return dataset.apply(tf.data.experimental.assert_cardinality(-(-len(rows) // batch_size)))


def predict(model, images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities for the given rows (all rows by default), in order."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    dataset = batches(images, np.zeros(len(images), dtype=np.int64), rows, PREDICT_BATCH)
    return np.asarray(model.predict(dataset.map(lambda x, y: x), verbose=0))


@dataclass
class TrainingResult:
    """How a trial's training ended, with the best epoch's weights restored into the model."""

    objective: str
    best_value: float | None = None
    best_epoch: int | None = None  # 1-based
    best_scores: dict[str, float] = field(default_factory=dict)
    history: list[EpochRow] = field(default_factory=list)
    stopped_by: str = "max epochs"
    pruned: bool = False
    seconds: float = 0.0
    cut: bool = False  # the study's time limit stopped it before its schedule ended: not a finished training

    @property
    def epochs_run(self) -> int:
        return len(self.history)


@dataclass(frozen=True)
class Limits:
    """When a trial stops: epochs, patience without improvement, wall-clock deadlines.

    Patience counts only epochs of the schedule's second half: before it the learning rate is still high and
    val scores wander, and the decay that follows is where a trial gains most."""

    epochs: int
    patience: int = 10
    deadline: float | None = None  # time.time() at which training stops, mid-epoch if need be (the study's budget)
    trial_seconds: float | None = None  # after which no new epoch starts, counted from the start (the trial's budget)


def train(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    params: TrainingParams,
    limits: Limits,
    objective: str = "accuracy",
    reporter: Reporter | None = None,
    seed: int = 0,
    class_weight: dict[int, float] | None = None,
    learning_rate: float | None = None,
) -> TrainingResult:
    """Fit for ``limits.epochs`` with augmentation (the schedule ends with the last of them), score val every
    epoch (``as_trained``), keep the best epoch of the schedule's second half; report to the pruner.

    ``images`` may be any rows of numbers the model takes: a head trains on its backbone's features."""
    result = TrainingResult(objective)
    watch = _EpochWatch(
        result, as_trained(model, params), images, labels, val_rows, limits, reporter, (train_rows, params.batch_size)
    )
    compile_for(model, params, limits.epochs, -(-len(train_rows) // params.batch_size), learning_rate)
    started = time.time()
    try:
        model.fit(
            _targets(
                batches(images, labels, train_rows, params.batch_size, params, shuffle_seed=seed),
                model.output_shape[-1],
                params,
            ),
            epochs=limits.epochs,
            verbose=0,
            callbacks=[watch],
            class_weight=class_weight,
            shuffle=False,  # the pipeline shuffles
        )
    finally:
        result.seconds = time.time() - started
    if watch.failure:
        raise TrialFailed(watch.failure)
    if watch.best_weights is not None:
        model.set_weights(watch.best_weights)
    return result


def refit(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    params: TrainingParams,
    epochs: int,
    class_weight: dict[int, float] | None = None,
    seed: int = 0,
) -> None:
    """Train a fresh model on ``rows`` for a fixed number of epochs (no validation left to stop on), in the
    stages its trial trained in: a fine-tuned backbone's head first trains alone, on unaugmented images."""
    parts = backbone_parts(model)
    if params.fine_tune_learning_rate is not None and parts is not None:
        trainable = [(layer, layer.trainable) for layer in leaf_layers(parts.backbone)]
        parts.backbone.trainable = False
        refit(model, images, labels, rows, params.without_augmentation(), epochs, class_weight, seed)
        parts.backbone.trainable = True  # sets every nested layer: each gets its own flag back
        for layer, flag in trainable:
            layer.trainable = flag
    compile_for(model, params, epochs, -(-len(rows) // params.batch_size), params.fine_tune_learning_rate)
    model.fit(
        _targets(
            batches(images, labels, rows, params.batch_size, params, shuffle_seed=seed),
            model.output_shape[-1],
            params,
        ),
        epochs=epochs,
        verbose=0,
        class_weight=class_weight,
        shuffle=False,
    )
    reestimate_batch_norm(model, images, rows, params.batch_size)


def reestimate_batch_norm(model, images: np.ndarray, rows: np.ndarray, batch_size: int) -> None:
    """Set every training batch norm layer's moving mean and variance to the plain average over batches of
    unaugmented training images, with the weights as they are now ("precise batch norm", Wu and Johnson 2021).

    The moving averages trained with the weights changing under them and on augmented images; they lag the
    weights: on fine-detail data a trial's val score went 0.75, 0.155, 0.715 in three epochs, and the 0.155
    epoch's weights scored 0.74 with the statistics estimated again. Averaged afresh, they are the statistics of
    the model being scored. A forward pass over at most BATCH_NORM_IMAGES images, a quarter of the rows
    when that is fewer, in whole batches (one at least)."""
    layers = [
        layer for layer in leaf_layers(model) if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not layers:
        return
    count = max(batch_size, min(BATCH_NORM_IMAGES, len(rows) // 4) // batch_size * batch_size)
    picked = np.random.default_rng(0).permutation(np.asarray(rows))[:count]
    momenta = [layer.momentum for layer in layers]
    try:
        for number, start in enumerate(range(0, len(picked), batch_size)):
            for layer in layers:  # the n-th batch weighs 1/n: an equal average of all batches so far
                layer.momentum = number / (number + 1)
            model(images[np.sort(picked[start : start + batch_size])], training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


class _EpochWatch(keras.callbacks.Callback):
    """After each epoch: score val, keep the best weights, report to the pruner, apply the limits.

    The best epoch is the best of the schedule's second half; one of the first half is kept only until the second
    half begins (a training cut before it keeps it). At the first half's high learning rates val scores wander, and
    the best of them is often luck: on the fine-detail set (benchmarks/README.md, stop 44) one training of eleven kept
    its epoch 6 of 13 for a lucky val peak and scored 0.791 on test, against 0.839 at its second half's best."""

    def __init__(
        self,
        result: TrainingResult,
        scored,
        images: np.ndarray,
        labels: np.ndarray,
        val_rows: np.ndarray,
        limits: Limits,
        reporter: Reporter | None,
        batch_norm_rows: tuple[np.ndarray, int],
    ):
        super().__init__()
        self.result, self.scored, self.images, self.labels, self.val_rows = result, scored, images, labels, val_rows
        self.batch_norm_rows = batch_norm_rows  # training rows and batch size for ``reestimate_batch_norm``
        self.limits, self.reporter = limits, reporter
        self.larger_is_better = OBJECTIVES[result.objective]
        self.best_weights: list | None = None
        self.best_in_second_half = False
        self.failure: str | None = None
        self.waited = 0
        self.partial_epoch = False
        self.started = time.time()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """The study's time limit stops training within a batch of it, not an epoch later (a 224 px epoch takes
        minutes). The trial's own limit waits for the epoch's end: a trial always has a scored epoch."""
        last_batch = batch + 1 >= (self.params.get("steps") or math.inf)  # the epoch ends and is scored as usual
        if self._time_limit_passed() == "study time limit" and not last_batch:
            self.result.cut = True
            self._stop("study time limit")
            self.partial_epoch = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.partial_epoch:  # stopped mid-epoch: nothing new to score
            return
        loss = float((logs or {}).get("loss", math.nan))
        if not math.isfinite(loss):
            self.failure = f"training diverged: loss became {loss} in epoch {epoch + 1}; lower the learning rate"
            self.model.stop_training = True
            return
        reestimate_batch_norm(self.model, self.images, *self.batch_norm_rows)
        epoch_scores = scores(self.labels[self.val_rows], predict(self.scored, self.images, self.val_rows))
        value = epoch_scores[self.result.objective]
        self.result.history.append(EpochRow(epoch + 1, loss, dict(epoch_scores)))
        best, second_half = self.result.best_value, epoch + 1 > self.limits.epochs // 2
        replaces_first_half = second_half and not self.best_in_second_half
        if math.isfinite(value) and (
            best is None or replaces_first_half or (value > best if self.larger_is_better else value < best)
        ):
            self.result.best_value, self.result.best_epoch = value, epoch + 1
            self.result.best_scores = epoch_scores
            self.best_weights = self.model.get_weights()
            self.best_in_second_half = second_half
            self.waited = 0
        elif second_half:  # the first half's high learning rates are not a plateau
            self.waited += 1
        if self.reporter is not None:
            self.reporter.report(value, epoch + 1)
            if self.reporter.should_prune():
                self.result.pruned = True
                return self._stop("pruned")
        limit = self._time_limit_passed()
        if self.waited >= self.limits.patience:
            self._stop(f"no improvement for {self.limits.patience} epochs of the schedule's second half")
        elif limit:
            self.result.cut = limit == "study time limit" and epoch + 1 < self.limits.epochs
            self._stop(limit)

    def _time_limit_passed(self) -> str:
        now = time.time()
        if self.limits.deadline is not None and now >= self.limits.deadline:
            return "study time limit"
        if self.limits.trial_seconds is not None and now - self.started >= self.limits.trial_seconds:
            return "trial time limit"
        return ""

    def _stop(self, reason: str) -> None:
        self.result.stopped_by = reason
        self.model.stop_training = True


def save_weights(model, path: Path) -> None:
    """Write the weights atomically: a crash never leaves a half-written file for export to pick up."""
    with atomic_path(path) as temporary:
        model.save_weights(temporary)
