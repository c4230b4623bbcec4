"""The data a model sees in training and prediction: each epoch's shuffled, augmented ``tf.data`` batches, and
class probabilities in plain batches (no augmentation)."""

from __future__ import annotations

import numpy as np

from edgecifar import NUM_CLASSES
from edgecifar.train.distill import TeacherViews, show_views

#: Mixup on top of the teacher's views (Beyer et al. 2022 distil with it): each batch mixed with itself reversed,
#: images and targets with the same weight drawn from Beta(MIXUP, MIXUP) per batch. 0 is off. A switch for an
#: experiment, not a recipe setting: it applies only to runs with teacher views (``distill_views``).
MIXUP = 0.0


def epoch_dataset(x: np.ndarray, y, batch: int, seed: int, epoch: int, augment: str, classes: int = NUM_CLASSES):
    """One epoch of shuffled, augmented batches; a pure function of (seed, epoch), so ``--resume`` at an epoch
    boundary gets the same batches (alternating flips included: train/augment.py).

    ``y`` is integer labels (made one-hot here), per-image target distributions ``[N, classes]`` (distillation's
    soft targets, train/distill.py), or :class:`TeacherViews`: each image is then shown as this epoch's view of it
    with the teacher's targets for that view, in place of ``augment``'s fresh draws."""
    import tensorflow as tf

    from edgecifar.train.augment import AUGMENTATIONS, mirror

    perm = np.random.default_rng([seed, epoch]).permutation(len(x))
    if isinstance(y, TeacherViews):
        targets, flips, shifts = y.epoch(epoch)
        ds = tf.data.Dataset.from_tensor_slices((x[perm], targets[perm], flips[perm], shifts[perm])).batch(batch)
        return _finish(ds.enumerate().map(_view_batches(seed, epoch), num_parallel_calls=2, deterministic=True))

    aug = AUGMENTATIONS[augment]
    flips = () if aug.flips is None else (aug.flips(len(x), seed, epoch)[perm],)   # one bool per image
    ds = tf.data.Dataset.from_tensor_slices((x[perm], y[perm], *flips)).batch(batch)

    def prepare(i, xy):
        images, targets, *flip = xy
        images = tf.cast(images, tf.float32)
        if flip:  # this batch's share of the epoch's flips
            images = mirror(images, flip[0])
        images = aug.per_batch(images, tf.stack([tf.cast(seed * 100_003 + epoch, tf.int64), i]))
        return images, (targets if y.ndim == 2 else tf.one_hot(targets, classes))

    return _finish(ds.enumerate().map(prepare, num_parallel_calls=2, deterministic=True))


def _view_batches(seed: int, epoch: int):
    """The tf.data map showing each batch's images as their views (with MIXUP, mixed)."""
    import tensorflow as tf

    # Straight-line TensorFlow, so AutoGraph is not needed; and AutoGraph re-reads the source files of what it
    # converts, so an edit to train/augment.py while a run trains made tf.data convert the wrong function.
    @tf.autograph.experimental.do_not_convert
    def prepare(i, batch):
        images, targets, flips, shifts = batch
        images = show_views(tf.cast(images, tf.float32), flips, shifts)
        if MIXUP:
            images, targets = mixup(images, targets, tf.stack([tf.cast(seed * 100_003 + epoch, tf.int64), i]))
        return images, targets

    return prepare


def mixup(images, targets, seed, a: float | None = None):
    """Each batch mixed with itself reversed, images and targets by one weight from Beta(a, a) (Zhang et al. 2018,
    "mixup"); ``seed`` is the batch's stateless key, so a resumed run mixes the same way."""
    import tensorflow as tf

    a = MIXUP if a is None else a
    seed = tf.cast(seed, tf.int64)
    g = [tf.random.stateless_gamma([], seed=seed + [8 + k, 0], alpha=a) for k in range(2)]
    lam = g[0] / (g[0] + g[1])
    return (lam * images + (1 - lam) * tf.reverse(images, axis=[0]),
            lam * targets + (1 - lam) * tf.reverse(targets, axis=[0]))


def _finish(ds):
    """Prefetch, without autotuning."""
    import tensorflow as tf

    # No autotuning: destroying an autotuned iterator waits for tf.data's tuning thread, which held each epoch's
    # end (model.fit's return) for 3-15 s on this 2-core machine, up to a third of a small model's epoch; two
    # parallel batches and two prefetched are what the cores can use anyway.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def predict(model, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """Class probabilities for uint8 images, in batches (no augmentation)."""
    out = [np.asarray(model(x[i:i + batch].astype(np.float32), training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)
