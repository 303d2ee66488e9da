"""Two architectures tried against blog-cnn on the development subset (issue 16), as a local plugin file.

Not built in: at 13 epochs neither beat blog-cnn's defaults by more than the noise on all 10,000 test images
(benchmarks/results/slices-fashion-mnist-dev-models.json). To use one, copy this file into ``plugins/`` of the
folder you run automl-img from, then ``automl-img search DATA --architecture resnet-s`` (or ``cnn3``).

``resnet-s`` is close to the example plugin ``plugins/small_resnet.py`` with ``-p base_filters=32 -p stages=3
-p blocks_per_stage=2``; it differs in what was measured: pre-activation blocks, blog-cnn's batch-norm momentum,
and defaults (the example has none, so its first trial is sampled).
"""

from automl_img.default_plugins.blog_cnn import BATCH_NORM_MOMENTUM
from automl_img.hookspecs import hookimpl


@hookimpl
def register_architectures(register):
    register("resnet-s", build_resnet)
    register("cnn3", build_cnn3)


def build_resnet(hp, input_shape, num_classes):
    """Pre-activation ResNet: stem 3x3, stages of 2 basic blocks, stride-2 downsampling between stages."""
    import keras
    from keras import layers

    widths = {"a": (32, 64, 128), "b": (48, 96, 192)}[hp.Choice("widths", ["a", "b"], default="a")]
    blocks = hp.Choice("blocks", [1, 2], default=2)
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False)(inputs)
    for stage, width in enumerate(widths):
        for b in range(blocks):
            stride = 2 if (stage > 0 and b == 0) else 1
            y = layers.Activation("relu")(layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(x))
            shortcut = x
            if stride != 1 or x.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False)(y)
            y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(y)
            y = layers.Activation("relu")(layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(y))
            y = layers.Conv2D(width, 3, padding="same", use_bias=False)(y)
            x = layers.Add()([shortcut, y])
    x = layers.Activation("relu")(layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(x))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.6, default=0.3))(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet_s")


def build_cnn3(hp, input_shape, num_classes):
    """blog-cnn's defaults without the 4th pooling block: 3 blocks (32, 64, 128), 2 convs each, GAP at 4x4."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = inputs
    for filters in (32, 64, 128):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.Activation("relu")(layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(x))
        x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.6, default=0.3))(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="cnn3")
