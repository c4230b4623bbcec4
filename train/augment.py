"""Vectorised, stateless data augmentation for a whole batch at once (runs inside tf.data).

Every random draw is a stateless function of an explicit seed, so a batch's augmentation depends only
on (run seed, epoch, batch index): runs are reproducible and a resumed run sees the same batches.
"""

from __future__ import annotations

import math

import tensorflow as tf


def _uniform(seed, n, lo, hi, salt: int):
    """Uniform draws in [lo, hi); ``salt`` gives each kind of draw its own stream."""
    return tf.random.stateless_uniform([n], seed=seed + tf.constant([salt, 0], tf.int64), minval=lo, maxval=hi)


def affine_transforms(n, height: int, width: int, seed, rotation_deg: float = 0.0, shift: float = 0.0,
                      zoom: float = 0.0, integer_shift: int = 0):
    """Per-image 8-parameter projective transforms (output -> input coordinates), about the centre.

    ``shift`` and ``zoom`` are fractions (as Keras' RandomTranslation/RandomZoom); ``integer_shift``
    draws whole-pixel shifts in [-k, k] instead (exact pixel moves with nearest sampling).
    """
    seed = tf.cast(seed, tf.int64)
    theta = _uniform(seed, n, -1.0, 1.0, 1) * (rotation_deg * math.pi / 180.0)
    scale = 1.0 + _uniform(seed, n, -zoom, zoom, 2) if zoom else tf.ones([n])
    if integer_shift:
        tx = tf.cast(tf.random.stateless_uniform([n], seed=seed + [3, 0], minval=-integer_shift,
                                                 maxval=integer_shift + 1, dtype=tf.int32), tf.float32)
        ty = tf.cast(tf.random.stateless_uniform([n], seed=seed + [4, 0], minval=-integer_shift,
                                                 maxval=integer_shift + 1, dtype=tf.int32), tf.float32)
    else:
        tx = _uniform(seed, n, -shift, shift, 3) * width
        ty = _uniform(seed, n, -shift, shift, 4) * height
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    c, s = tf.cos(theta) * scale, tf.sin(theta) * scale
    a2 = cx - c * cx + s * cy + tx
    b2 = cy - s * cx - c * cy + ty
    zeros = tf.zeros([n])
    return tf.stack([c, -s, a2, s, c, b2, zeros, zeros], axis=1)


def random_flip(images, seed):
    """Mirror each image left-right with probability 1/2."""
    n = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([n], seed=tf.cast(seed, tf.int64) + [5, 0]) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def transform(images, transforms, interpolation: str):
    """Apply per-image transforms with reflect fill, as Keras' preprocessing layers do."""
    shape = tf.shape(images)[1:3]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape, fill_value=0.0,
        interpolation=interpolation, fill_mode="REFLECT")


def flip_translate(images, seed, pad: int = 2):
    """Random flip plus a whole-pixel translation of up to ``pad`` pixels, reflect-padded."""
    n = tf.shape(images)[0]
    t = affine_transforms(n, 32, 32, seed, integer_shift=pad)
    return transform(random_flip(images, seed), t, "NEAREST")


def seed_notebook(images, seed):
    """The seed notebook's ImageDataGenerator: rotation 15 deg, shifts 0.1, zoom 0.1, horizontal flip."""
    n = tf.shape(images)[0]
    t = affine_transforms(n, 32, 32, seed, rotation_deg=15.0, shift=0.1, zoom=0.1)
    return transform(random_flip(images, seed), t, "BILINEAR")


AUGMENTATIONS = {
    "none": lambda images, seed: images,
    "flip_translate": flip_translate,
    "seed": seed_notebook,
}
