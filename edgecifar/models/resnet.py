"""ResNets for 32x32 inputs: the MLPerf Tiny reference ResNet-8."""

from __future__ import annotations

import keras
from keras import layers

from edgecifar.models.layers import classifier, pixels_input, standardize
from edgecifar.models.registry import register


def _residual_stack(x, filters: int, stride: int, reg):
    """Two 3x3 convs with a shortcut (1x1 conv when the shape changes), as in MLPerf Tiny."""
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", kernel_initializer="he_normal",
                      kernel_regularizer=reg)(x)
    y = layers.BatchNormalization()(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal", kernel_regularizer=reg)(y)
    y = layers.BatchNormalization()(y)
    if stride != 1 or x.shape[-1] != filters:
        x = layers.Conv2D(filters, 1, strides=stride, padding="same", kernel_initializer="he_normal",
                          kernel_regularizer=reg)(x)
    return layers.Activation("relu")(layers.Add()([x, y]))


@register(family="resnet")
def resnet8(weight_decay: float = 1e-4) -> keras.Model:
    """MLPerf Tiny reference ResNet-8: 16/32/64 filters, 78,666 parameters."""
    reg = keras.regularizers.L2(weight_decay) if weight_decay else None
    inp = pixels_input()
    x = standardize(inp)
    x = layers.Conv2D(16, 3, padding="same", kernel_initializer="he_normal", kernel_regularizer=reg)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        x = _residual_stack(x, filters, stride, reg)
    x = layers.AveragePooling2D(pool_size=8)(x)
    x = layers.Flatten()(x)
    return keras.Model(inp, classifier(x, regularizer=reg), name="resnet8")
