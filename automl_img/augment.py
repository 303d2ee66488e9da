"""Training-time augmentation: rotation, zoom, shift and flip fused into one affine warp per image."""

from __future__ import annotations

import math

from automl_img.tf_runtime import tf

from automl_img.space import TrainingParams


def random_affine(images, params: TrainingParams, seed):
    """Warp a uint8 batch ``(B, H, W, C)`` once, with every augmentation drawn per image.

    Keras' separate RandomRotation/RandomZoom/RandomTranslation layers resample the batch once
    each; composing them into one matrix resamples once, and keeps the pixels uint8. The draws
    are stateless, from the batch's own ``seed`` (two integers): batches augmented in parallel
    get the same draws whatever order they run in, so a seeded search repeats exactly.
    """
    shape = tf.shape(images)
    batch = shape[0]
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)

    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, 5)))

    def uniform(limit: float):
        return tf.random.stateless_uniform([batch], next(seeds), -limit, limit)

    angle = uniform(params.rotation * math.pi / 180.0)
    scale = 1.0 + uniform(params.zoom)  # >1 zooms in
    shift_x = uniform(params.width_shift) * width
    shift_y = uniform(params.height_shift) * height
    flip = tf.ones([batch])
    if params.horizontal_flip:
        flip = tf.where(uniform(1.0) < 0.0, -1.0, 1.0)
    # Output pixel -> input pixel: input = R(angle) . F(flip) . (out - centre) / scale + centre - shift.
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    a0, a1, b0, b1 = cos * flip, -sin, sin * flip, cos
    centre_x, centre_y = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    a2 = centre_x - (a0 * centre_x + a1 * centre_y) - shift_x
    b2 = centre_y - (b0 * centre_x + b1 * centre_y) - shift_y
    zeros = tf.zeros([batch])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",  # the recipe's ImageDataGenerator default
    )
