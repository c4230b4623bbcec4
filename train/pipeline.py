"""The data a model sees in training and prediction: each epoch's shuffled, augmented ``tf.data`` batches, and
class probabilities in plain batches (no augmentation)."""

from __future__ import annotations

import numpy as np


def epoch_dataset(x: np.ndarray, y: np.ndarray, batch: int, seed: int, epoch: int, augment: str):
    """One epoch of shuffled, augmented batches; a pure function of (seed, epoch), so ``--resume`` at an epoch
    boundary gets the same batches (alternating flips included: train/augment.py).

    ``y`` is integer labels (made one-hot here) or per-image target distributions ``[N, classes]``
    (distillation's soft targets, train/distill.py)."""
    import tensorflow as tf

    from edgecifar import NUM_CLASSES
    from edgecifar.train.augment import AUGMENTATIONS, mirror

    perm = np.random.default_rng([seed, epoch]).permutation(len(x))
    aug = AUGMENTATIONS[augment]
    flips = () if aug.flips is None else (aug.flips(len(x), seed, epoch)[perm],)   # one bool per image
    ds = tf.data.Dataset.from_tensor_slices((x[perm], y[perm], *flips)).batch(batch)

    def prepare(i, xy):
        images, targets, *flip = xy
        images = tf.cast(images, tf.float32)
        if flip:  # this batch's share of the epoch's flips
            images = mirror(images, flip[0])
        images = aug.per_batch(images, tf.stack([tf.cast(seed * 100_003 + epoch, tf.int64), i]))
        return images, (targets if y.ndim == 2 else tf.one_hot(targets, NUM_CLASSES))

    # No autotuning: destroying an autotuned iterator waits for tf.data's tuning thread, which held each epoch's
    # end (model.fit's return) for 3-15 s on this 2-core machine, up to a third of a small model's epoch; two
    # parallel batches and two prefetched are what the cores can use anyway.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.enumerate().map(prepare, num_parallel_calls=2, deterministic=True).prefetch(2).with_options(options)


def predict(model, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """Class probabilities for uint8 images, in batches (no augmentation)."""
    out = [np.asarray(model(x[i:i + batch].astype(np.float32), training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)
