"""Example local plugin: a ``small-resnet`` architecture (residual blocks, global pooling).

It declares its hyperparameters with KerasTuner's vocabulary; automl-img backs them with Optuna.
"""

from __future__ import annotations

from automl_img import hookimpl


@hookimpl
def register_architectures(register):
    register("small-resnet", build_small_resnet)


def build_small_resnet(hp, input_shape, num_classes):
    """A small ResNet: 2-3 stages of residual blocks with batch norm, then global average pooling."""
    import keras
    from keras import layers

    filters = hp.Choice("base_filters", [16, 32, 48], ordered=True)
    blocks = hp.Int("blocks_per_stage", 1, 2)
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for stage in range(hp.Int("stages", 2, 3)):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
            y = layers.Activation("relu")(layers.BatchNormalization()(y))
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization()(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
            x = layers.Activation("relu")(layers.Add()([y, shortcut]))
        filters *= 2
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.5))(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_resnet")
