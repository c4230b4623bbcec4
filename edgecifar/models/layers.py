"""Building blocks shared by the architectures: input normalisation and the classifier output."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Sequence

import keras
import numpy as np

from edgecifar import INPUT_SHAPE, NUM_CLASSES

# Per-channel statistics of the official CIFAR-10 training set (reproduced by the shared copy).
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32) * 255.0
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32) * 255.0


#: The data a model is built for: (input shape H, W, C; class count). CIFAR-10's unless a caller building for other
#: data says otherwise with :func:`data_shape`: every registered architecture takes its input from
#: :func:`pixels_input` and ends in :func:`classifier`, so each adapts without a parameter of its own.
_DATA: contextvars.ContextVar[tuple[tuple[int, int, int], int]] = contextvars.ContextVar(
    "edgecifar_data_shape", default=(INPUT_SHAPE, NUM_CLASSES))


@contextlib.contextmanager
def data_shape(input_shape: tuple[int, int, int], classes: int) -> Iterator[None]:
    """Build models inside this block for images of ``input_shape`` and ``classes`` classes (``train --data
    FOLDER``: the folder's classes, ``--image-size``)."""
    token = _DATA.set((tuple(input_shape), int(classes)))
    try:
        yield
    finally:
        _DATA.reset(token)


def pixels_input(name: str = "pixels") -> keras.KerasTensor:
    """The contract's input: raw RGB pixels 0-255, float32, any batch size, at the data's size (CIFAR-10's 32x32
    unless built inside :func:`data_shape`)."""
    return keras.Input(shape=_DATA.get()[0], dtype="float32", name=name)


def scale_01(x):
    """Pixels to [0, 1], as the seed notebook's ``x / 255``."""
    return keras.layers.Rescaling(1.0 / 255.0, name="scale_01")(x)


def standardize(x):
    """Pixels to zero mean, unit variance per channel (CIFAR-10 statistics); no weights to train."""
    return keras.layers.Rescaling(scale=(1.0 / CIFAR_STD).tolist(), offset=(-CIFAR_MEAN / CIFAR_STD).tolist(),
                                  name="standardize")(x)


def classifier(x, units: int | None = None, regularizer=None, name: str = "scores"):
    """Dense logits (one per class of the data) then a float32 softmax, so mixed-precision models still output
    float32 probabilities."""
    x = keras.layers.Dense(units or _DATA.get()[1], kernel_regularizer=regularizer, name=f"{name}_logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name=name)(x)


@keras.saving.register_keras_serializable(package="edgecifar")
class StackMirror(keras.layers.Layer):
    """Batch of N images -> batch of 2N: the images, then their mirrors (CONCATENATION + REVERSE_V2)."""

    def call(self, x):
        return keras.ops.concatenate([x, keras.ops.flip(x, axis=2)], axis=0)


@keras.saving.register_keras_serializable(package="edgecifar")
class MeanOfHalves(keras.layers.Layer):
    """Batch of 2N score rows -> N rows: the mean of row i and row N + i."""

    def call(self, x):
        return keras.ops.mean(keras.ops.reshape(x, (2, -1, x.shape[-1])), axis=0)


@keras.saving.register_keras_serializable(package="edgecifar")
class StackCrops(keras.layers.Layer):
    """Batch of N images -> batch of 6N: the image, the image shifted one pixel down-right, then one pixel
    up-left (reflect padding by 1, crops [0:32] and [2:34]), each followed by its mirror.

    The views of airbench94's ``infer_mirror_translate`` (MIRROR_PAD, STRIDED_SLICE, REVERSE_V2, CONCATENATION)."""

    def call(self, x):
        padded = keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
        views = (x, padded[:, :-2, :-2], padded[:, 2:, 2:])
        return keras.ops.concatenate([v for view in views for v in (view, keras.ops.flip(view, axis=2))], axis=0)


@keras.saving.register_keras_serializable(package="edgecifar")
class WeightedMeanOfGroups(keras.layers.Layer):
    """Batch of G*N score rows -> N rows: row i is the sum over g of ``view_weights[g]`` * row g*N + i."""

    def __init__(self, view_weights: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.view_weights = tuple(float(w) for w in view_weights)

    def call(self, x):
        groups = keras.ops.reshape(x, (len(self.view_weights), -1, x.shape[-1]))
        w = keras.ops.reshape(keras.ops.convert_to_tensor(self.view_weights, dtype=x.dtype), (-1, 1, 1))
        return keras.ops.sum(groups * w, axis=0)

    def get_config(self) -> dict:
        return {**super().get_config(), "view_weights": list(self.view_weights)}


#: Weights of StackCrops' six views (airbench94): 1/2 to the image and its mirror, 1/2 to the four shifted views.
CROP_WEIGHTS = (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)


def with_flip_tta(model: keras.Model) -> keras.Model:
    """Average the model's probabilities on the image and its mirror: about twice the work, often
    a few tenths of a point more accuracy. Same contract, same weights.

    The mirror rides in the same batch through one copy of the network, rather than through a second
    call, because TFLite would otherwise store the folded weights twice (108 KB instead of 96 KB for
    edge_tiny int8)."""
    inp = keras.Input(shape=model.input_shape[1:], dtype="float32", name="pixels")
    out = MeanOfHalves(name="flip_tta", dtype="float32")(model(StackMirror(name="mirror")(inp)))
    return keras.Model(inp, out, name=f"{model.name}_tta")


def with_crop_tta(model: keras.Model) -> keras.Model:
    """Average the model's probabilities on six views (StackCrops, weighted by CROP_WEIGHTS): airbench94's
    second TTA level, six times the work, same contract, same weights (stored once, as in with_flip_tta).

    airbench averages logits; our models end in a softmax, so this averages probabilities."""
    inp = keras.Input(shape=model.input_shape[1:], dtype="float32", name="pixels")
    out = WeightedMeanOfGroups(CROP_WEIGHTS, name="crop_tta", dtype="float32")(model(StackCrops(name="crops")(inp)))
    return keras.Model(inp, out, name=f"{model.name}_tta6")
