"""The ``blog-cnn`` architecture: the well-known 4-block recipe, its fixed choices made searchable."""

from __future__ import annotations

from automl_img.hookspecs import hookimpl

# The recipe: Conv(32, relu), Conv(32, relu), Conv(32, elu), Conv(64, elu), each + MaxPool;
# Dropout(0.4), Flatten, Dense(64, relu), Dense(classes, softmax). The defaults (trial 0) are what
# won the searches on our development data instead: relu, batch norm, wider later blocks, dropout 0.3.
DEFAULT_FILTERS = (32, 64, 128, 128)
# Wide early blocks cost the most (full resolution), so they get the narrower choices.
FILTER_CHOICES = ([16, 32, 64], [16, 32, 64], [32, 64, 128], [32, 64, 128])
# Two convolutions per block (as VGG): on the development subset, 15 epochs of the defaults scored val 0.9144 and
# 0.9056 (seeds 0, 1) with two against 0.9000 and 0.8889 with one, and 0.9067 and 0.8922 with one for 30 epochs,
# which take as long. One per block (the blog's) stays a choice.
# Keras' default momentum 0.99 averages batch statistics over ~100 steps: with ~80 steps an epoch on a few
# thousand images, the first epochs' val scores were noise (0.11 to 0.24 while training went well), and the
# pruner judged trials on them. 0.9 follows the weights within an epoch.
BATCH_NORM_MOMENTUM = 0.9
DEFAULT_CONVS_PER_BLOCK = 2
# Above this side the default is one convolution per block: width traded for resolution, so a 128 px default
# trial costs about what a 64 px one does (0.19 against 0.17 G multiply-adds an image).
TWO_CONVS_MAX_IMAGE_SIZE = 64
# Above this side the default network starts with a patchify stem: a 2x2 convolution of stride 2 with four filters
# per input channel, as many numbers as the patch has pixels, so it can pass every pixel on (a learned space to
# depth) while the blocks run at half the side. A 224 px default trial then costs 0.16 G multiply-adds an image,
# less than a 128 px one, not 0.6. On the fine-detail development set the 4-epoch 224 px defaults scored val 0.84 in
# 39 s with the stem and 0.74 in 85 s without (128 px: 0.8325 in 29 s; 15-minute searches, seed 0).
NO_STEM_MAX_IMAGE_SIZE = 128
STEMS = ("none", "patchify")
DEFAULT_HEAD = "average"
HEADS = ("flatten", "average")  # Flatten + Dense, or global average pooling + Dense (fewer weights)
ACTIVATIONS = {"recipe": ("relu", "relu", "elu", "elu"), "relu": ("relu",) * 4, "elu": ("elu",) * 4}


@hookimpl
def register_architectures(register):
    register("blog-cnn", build_blog_cnn)


def default_convs_per_block(image_size: int) -> int:
    return DEFAULT_CONVS_PER_BLOCK if image_size <= TWO_CONVS_MAX_IMAGE_SIZE else 1


def default_stem(image_size: int) -> str:
    return "patchify" if image_size > NO_STEM_MAX_IMAGE_SIZE else "none"


def build_blog_cnn(hp, input_shape, num_classes):
    """The blog's 4-block CNN; filters per block, activations, batch norm, dropout, head and dense width are searched."""  # noqa: E501 - its first line describes the plugin in `automl-img plugins`
    import keras
    from keras import layers

    activations = ACTIVATIONS[hp.Choice("activations", list(ACTIVATIONS), default="relu")]
    batch_norm = hp.Boolean("batch_norm", default=True)  # not in the recipe; often worth a point
    convs = hp.Choice("convs_per_block", [1, 2], ordered=True, default=default_convs_per_block(input_shape[0]))
    stem = hp.Choice("stem", list(STEMS), default=default_stem(input_shape[0]))
    inputs = keras.Input(input_shape)
    x = inputs
    if stem == "patchify":
        x = layers.Conv2D(4 * input_shape[-1], 2, strides=2, padding="same", use_bias=False, name="patchify")(x)
    for block, (default_filters, activation) in enumerate(zip(DEFAULT_FILTERS, activations), start=1):
        choices = FILTER_CHOICES[block - 1]
        filters = hp.Choice(f"filters_{block}", choices, ordered=True, default=default_filters)
        for _ in range(convs):
            if batch_norm:
                x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
                x = layers.Activation(activation)(layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM)(x))
            else:
                x = layers.Conv2D(filters, 3, padding="same", activation=activation)(x)
        # "same" pooling keeps 1 px as 1 px, so tiny images (8 px digits) survive four blocks.
        x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Dropout(hp.Float("dropout", 0.0, 0.6, default=0.3))(x)
    head = hp.Choice("head", list(HEADS), default=DEFAULT_HEAD)
    x = layers.Flatten()(x) if head == "flatten" else layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(hp.Choice("dense_units", [32, 64, 128, 256], ordered=True, default=256), activation="relu")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)  # float32 under mixed precision
    return keras.Model(inputs, outputs, name="blog_cnn")
