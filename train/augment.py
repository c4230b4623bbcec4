"""Vectorised, stateless data augmentation for a whole batch at once (runs inside tf.data).

Every random draw is a stateless function of an explicit seed, so a batch's augmentation depends only
on (run seed, epoch, batch index): runs are reproducible and a resumed run sees the same batches.
An augmentation may also fix which images an epoch mirrors (``Augmentation.flips``, numpy, one bool per image
keyed by its place in the training set, applied batch by batch): airbench's alternating flip is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, get_args

import numpy as np
import tensorflow as tf

from edgecifar.train.recipes import Augment


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
    return mirror(images, tf.random.stateless_uniform([n], seed=tf.cast(seed, tf.int64) + [5, 0]) < 0.5)


def transform(images, transforms, interpolation: str):
    """Apply per-image transforms with reflect fill, as Keras' preprocessing layers do."""
    shape = tf.shape(images)[1:3]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape, fill_value=0.0,
        interpolation=interpolation, fill_mode="REFLECT")


def translate(images, seed, pad: int = 2):
    """A whole-pixel translation of up to ``pad`` pixels, reflect-padded."""
    n = tf.shape(images)[0]
    return transform(images, affine_transforms(n, 32, 32, seed, integer_shift=pad), "NEAREST")


def flip_translate(images, seed, pad: int = 2):
    """Random flip plus a whole-pixel translation of up to ``pad`` pixels, reflect-padded."""
    return translate(random_flip(images, seed), seed, pad)


#: Cutout's square side (pixels) and fill: mid-grey, about the training set's mean pixel, so the hole reads as
#: "no information" after the model's standardisation rather than as a black patch.
CUTOUT_SIZE = 8
CUTOUT_FILL = 127.5


def cutout(images, seed, size: int = CUTOUT_SIZE):
    """Each image with one ``size`` x ``size`` square set to mid-grey, its centre uniform over the image (so the
    square may be clipped at a border): DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural
    Networks with Cutout", at half their CIFAR-10 side for a small model."""
    n, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    seed = tf.cast(seed, tf.int64)
    cy = tf.random.stateless_uniform([n], seed=seed + [6, 0], minval=0, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([n], seed=seed + [7, 0], minval=0, maxval=width, dtype=tf.int32)
    half = size // 2
    rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
    in_rows = (rows >= cy[:, None] - half) & (rows < cy[:, None] - half + size)    # [n, height]
    in_cols = (cols >= cx[:, None] - half) & (cols < cx[:, None] - half + size)    # [n, width]
    hole = (in_rows[:, :, None] & in_cols[:, None, :])[..., None]                  # [n, height, width, 1]
    return tf.where(hole, tf.cast(CUTOUT_FILL, images.dtype), images)


def flip_translate_cutout(images, seed, pad: int = 2):
    """flip_translate, then cutout."""
    return cutout(flip_translate(images, seed, pad), seed)


# Keys the once-per-run flip mask apart from the (seed, epoch) keys of each epoch's shuffle (train/pipeline.py).
_ALTFLIP_STREAM = 2**31 - 1


def alternating_flips(n: int, seed: int, epoch: int) -> np.ndarray:
    """Which of ``n`` training images to mirror in ``epoch``: a random half chosen once per run seed in even
    epochs, the other images in odd ones, so every image is seen both ways in any two consecutive epochs.

    Keller Jordan's alternating flip (airbench94.py ``CifarLoader``: ``batch_flip_lr`` once at epoch 0,
    then ``images.flip(-1)`` when ``epoch % 2 == 1``), which beats a fresh coin per image per epoch."""
    chosen = np.random.default_rng([seed, _ALTFLIP_STREAM]).random(n) < 0.5
    return chosen if epoch % 2 == 0 else ~chosen


def mirror(images, flips):
    """``images [B, H, W, C]`` with those whose ``flips [B]`` is true mirrored left to right: one batch at a time,
    inside tf.data, so an epoch's flips never copy the training set."""
    return tf.where(tf.reshape(flips, [-1, 1, 1, 1]), tf.reverse(images, axis=[2]), images)


def seed_notebook(images, seed):
    """The seed notebook's ImageDataGenerator: rotation 15 deg, shifts 0.1, zoom 0.1, horizontal flip."""
    n = tf.shape(images)[0]
    t = affine_transforms(n, 32, 32, seed, rotation_deg=15.0, shift=0.1, zoom=0.1)
    return transform(random_flip(images, seed), t, "BILINEAR")


@dataclass(frozen=True)
class Augmentation:
    """``per_batch(images, seed)`` transforms each batch inside tf.data (seed: (run seed, epoch) x batch index);
    ``flips(n, run seed, epoch)``, when set, says which of the ``n`` training images (in training-set order) the
    epoch mirrors; each batch takes its images' flags and is mirrored (:func:`mirror`) before ``per_batch``."""

    per_batch: Callable
    flips: Callable[[int, int, int], np.ndarray] | None = None


AUGMENTATIONS = {   # one per recipes.Augment name (the recipe table's names are the home; this table must cover them)
    "none": Augmentation(lambda images, seed: images),
    "flip_translate": Augmentation(flip_translate),
    "flip_translate_cutout": Augmentation(flip_translate_cutout),
    "altflip_translate": Augmentation(translate, flips=alternating_flips),
    "seed": Augmentation(seed_notebook),
}
if set(AUGMENTATIONS) != set(get_args(Augment)):
    raise ImportError(f"train/augment.py: AUGMENTATIONS {sorted(AUGMENTATIONS)} differ from recipes.Augment "
                      f"{get_args(Augment)}")
