"""Weight averaging: an exponential moving average (EMA) of every model weight, BatchNorm statistics included.

The averaged weights sit in a flatter part of the loss surface than the last step's, so they usually
generalise better at no training cost (as timm's ``ModelEmaV2`` and the CIFAR-10 speed runs use it).
Training itself never sees them: the run evaluates and ships them at the end.

The decay warms up as ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates (TensorFlow's
``ExponentialMovingAverage`` rule), so the first steps' random weights wash out quickly.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np

from edgecifar.errors import EdgeCifarError
from edgecifar.fileio import atomic_path


def warmed_decay(decay: float, updates: int) -> float:
    """The decay used for update number ``updates`` (0-based)."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class WeightEMA(keras.callbacks.Callback):
    """Shadow copies of the model's float weights, updated after every training batch."""

    def __init__(self, model, decay: float):
        import tensorflow as tf

        super().__init__()
        if not 0.0 < decay < 1.0:
            raise EdgeCifarError(f"EMA decay must be between 0 and 1 (got {decay})")
        self.net, self.decay = model, decay
        self._weights = [w for w in model.weights if "float" in str(w.dtype)]  # not the dropout seed state
        self.shadow = [tf.Variable(np.asarray(w.value), trainable=False) for w in self._weights]
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False)

        @tf.function
        def _update():
            t = tf.cast(self.updates, tf.float32)
            d = tf.minimum(tf.constant(decay, tf.float32), (1.0 + t) / (10.0 + t))
            for s, w in zip(self.shadow, self._weights):
                s.assign(d * s + (1.0 - d) * tf.cast(w.value, s.dtype))
            self.updates.assign_add(1)

        self._update = _update

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._update()

    @contextmanager
    def swapped_in(self):
        """The averaged weights in the model for the duration of the block, the trained ones after."""
        saved = [np.asarray(w.value) for w in self._weights]
        self.copy_to_model()
        try:
            yield self.net
        finally:
            for w, v in zip(self._weights, saved):
                w.assign(v)

    def copy_to_model(self) -> None:
        for w, s in zip(self._weights, self.shadow):
            w.assign(np.asarray(s.value()).astype(w.dtype))

    def save(self, path: Path) -> None:
        arrays = {f"w{i}": np.asarray(s.value()) for i, s in enumerate(self.shadow)}
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, updates=np.int64(self.updates.numpy()), **arrays)

    def load(self, path: Path) -> None:
        try:
            with np.load(path) as z:
                arrays = [z[f"w{i}"] for i in range(len(self.shadow))]
                updates = int(z["updates"])
        except Exception as exc:
            raise EdgeCifarError(f"{path}: weight average unreadable ({type(exc).__name__}: {exc})") from None
        for s, a in zip(self.shadow, arrays):
            if s.shape != a.shape:
                raise EdgeCifarError(f"{path}: weight average does not match the model ({a.shape} vs {s.shape})")
            s.assign(a)
        self.updates.assign(updates)
