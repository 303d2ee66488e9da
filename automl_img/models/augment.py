"""Training-time augmentation: rotation, zoom, shift and flip fused into one affine warp per image, then
random erasing."""

from __future__ import annotations

import math

from automl_img.space import TrainingParams
from automl_img.tf_runtime import tf


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


# Random erasing (Zhong et al., AAAI 2020): the rectangle covers this share of the image, with this
# height:width ratio (log-uniform), as in the paper.
ERASED_AREA = (0.02, 0.4)
ERASED_ASPECT = (0.3, 1 / 0.3)


def augment(images, params: TrainingParams, seed):
    """Every augmentation ``params`` asks for, on a uint8 batch: the affine warp, then random erasing."""
    if params.warps:
        images = random_affine(images, params, seed)
    if params.erasing:
        images = random_erasing(images, params.erasing, tf.random.experimental.stateless_fold_in(seed, 1))
    return images


def random_erasing(images, probability: float, seed):
    """With ``probability``, replace one rectangle of each image by random pixels.

    It hides part of the object, so the model cannot rely on any one part of it. Per-image rectangles as
    one mask (comparisons against a coordinate grid), stateless draws from the batch's seed.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, 6)))

    def uniform(low: float, high: float):
        return tf.random.stateless_uniform([batch], next(seeds), low, high)

    area = uniform(*ERASED_AREA) * tf.cast(height * width, tf.float32)
    aspect = tf.exp(uniform(math.log(ERASED_ASPECT[0]), math.log(ERASED_ASPECT[1])))
    box_height = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), 1, height)
    box_width = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), 1, width)
    top = tf.cast(uniform(0.0, 1.0) * tf.cast(height - box_height + 1, tf.float32), tf.int32)
    left = tf.cast(uniform(0.0, 1.0) * tf.cast(width - box_width + 1, tf.float32), tf.int32)
    erased = uniform(0.0, 1.0) < probability

    def inside(start, size, length):  # (batch, length): whether each coordinate lies in the box
        coordinate = tf.range(length)[None, :]
        return (coordinate >= start[:, None]) & (coordinate < (start + size)[:, None])

    mask = inside(top, box_height, height)[:, :, None] & inside(left, box_width, width)[:, None, :]
    mask = (mask & erased[:, None, None])[..., None]
    noise = tf.cast(tf.random.stateless_uniform(shape, next(seeds), 0, 256, dtype=tf.int32), images.dtype)
    return tf.where(mask, noise, images)
