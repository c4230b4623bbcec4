"""The seed notebook's ladder of custom CNNs, each its own model trained from scratch.

baseline -> deeper (+conv, dropout) -> bn_gap (+BatchNorm, global average pooling) -> l2 (+weight
decay). ``early_stop`` and ``augment`` are training recipes on the ``l2`` model (see edgecifar.train).
"""

from __future__ import annotations

import keras
from keras import layers

from edgecifar.models.layers import classifier, pixels_input, scale_01
from edgecifar.models.registry import register


@register(family="ladder")
def baseline() -> keras.Model:
    """Seed step 1: Conv32-Pool-Conv64-Pool-Dense128."""
    inp = pixels_input()
    x = scale_01(inp)
    x = layers.Conv2D(32, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    return keras.Model(inp, classifier(x), name="baseline")


@register(family="ladder")
def deeper() -> keras.Model:
    """Seed step 2: baseline + Conv128, Dense256, Dropout 0.5."""
    inp = pixels_input()
    x = scale_01(inp)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inp, classifier(x), name="deeper")


def _bn_gap(name: str, weight_decay: float) -> keras.Model:
    reg = keras.regularizers.L2(weight_decay) if weight_decay else None
    inp = pixels_input()
    x = scale_01(inp)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(256, activation="relu", kernel_regularizer=reg)(x)
    x = layers.Dropout(0.5)(x)
    return keras.Model(inp, classifier(x, regularizer=reg), name=name)


@register(family="ladder")
def bn_gap() -> keras.Model:
    """Seed step 3: deeper + BatchNorm after each conv, GlobalAveragePooling instead of Flatten."""
    return _bn_gap("bn_gap", 0.0)


@register(family="ladder")
def l2() -> keras.Model:
    """Seed step 4: bn_gap + L2 weight decay 1e-4 on every kernel."""
    return _bn_gap("l2", 1e-4)
