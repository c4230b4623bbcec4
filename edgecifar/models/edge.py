"""edgecifar's own edge-optimised architectures, trained from scratch (no ImageNet weights).

Plain convnets: on small images, int8 convolutions through XNNPACK are fast and quantise without
loss, while depthwise layers are slow to train here and lose accuracy in int8.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from edgecifar.models.layers import classifier, pixels_input, standardize
from edgecifar.models.registry import register

# Keras' default 0.99 leaves the running statistics far from the batch ones after the few hundred
# large-batch steps these recipes take, so validation is meaningless early on; 0.9 tracks them.
BN_MOMENTUM = 0.9


def _conv_bn(x, filters: int, reg=None, bn_momentum: float = BN_MOMENTUM, bn_scale: bool = True):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_regularizer=reg)(x)
    return layers.BatchNormalization(momentum=bn_momentum, scale=bn_scale)(x)


def _conv_bn_act(x, filters: int, reg, act: str, bn_momentum: float = BN_MOMENTUM, bn_scale: bool = True):
    return layers.Activation(act)(_conv_bn(x, filters, reg, bn_momentum, bn_scale))


def plain_convnet(name: str, widths: Sequence[int], stem: int, act: str = "gelu",
                  weight_decay: float = 0.0, bn_momentum: float = BN_MOMENTUM, bn_scale: bool = True) -> keras.Model:
    """A 2x2 stem conv, then per width: conv-maxpool-BN-act-conv-BN-act; global max-pool; dense.

    The shape of the fast CIFAR-10 speed-run convnets (Keller Jordan's airbench family). ``bn_scale=False``
    gives BatchNorm a learned shift only, as airbench94 does (its BatchNorm keeps ``weight`` at 1, untrained).
    """
    reg = keras.regularizers.L2(weight_decay) if weight_decay else None
    inp = pixels_input()
    x = standardize(inp)
    x = layers.Conv2D(stem, 2, padding="valid", use_bias=False, kernel_regularizer=reg, name="stem")(x)
    x = layers.Activation(act)(x)
    for w in widths:
        x = layers.Conv2D(w, 3, padding="same", use_bias=False, kernel_regularizer=reg)(x)
        x = layers.MaxPooling2D()(x)
        x = layers.BatchNormalization(momentum=bn_momentum, scale=bn_scale)(x)
        x = layers.Activation(act)(x)
        x = _conv_bn_act(x, w, reg, act, bn_momentum, bn_scale)
    x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inp, classifier(x, regularizer=reg), name=name)


@register(family="edge")
def edge_best(**kw) -> keras.Model:
    """Plain 3-stage convnet 64/256/256 (2.0M params), our most accurate model.

    ``kw`` (a recipe's ``model_kwargs``) goes to ``plain_convnet``: ``bn_scale``, ``bn_momentum``, ``act``."""
    # Its zoo run was trained with Keras' default BatchNorm momentum; kept so the recipe reproduces it.
    return plain_convnet("edge_best", (64, 256, 256), stem=24, **{"bn_momentum": 0.99, **kw})


@register(family="edge")
def edge_fast(**kw) -> keras.Model:
    """Plain 3-stage convnet 32/128/128 (0.5M params), a quarter of edge_best's work.

    ``kw`` (a recipe's ``model_kwargs``) goes to ``plain_convnet``: ``bn_scale``, ``bn_momentum``, ``act``."""
    return plain_convnet("edge_fast", (32, 128, 128), stem=16, **kw)


@register(family="edge")
def edge_tiny(act: str = "gelu") -> keras.Model:
    """Plain convnet 24/32/64 at full 32x32 resolution first (79k params, under 100 KiB as int8)."""
    inp = pixels_input()
    x = standardize(inp)
    x = _conv_bn_act(x, 24, None, act)
    x = _conv_bn_act(x, 24, None, act)
    for w in (32, 64):
        x = layers.Conv2D(w, 3, padding="same", use_bias=False)(x)
        x = layers.MaxPooling2D()(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.Activation(act)(x)
        x = _conv_bn_act(x, w, None, act)
    x = layers.MaxPooling2D()(x)
    x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inp, classifier(x), name="edge_tiny")


def micro_convnet(name: str, stem: Sequence[int], widths: Sequence[int], residual: bool = False) -> keras.Model:
    """Full-resolution stem convs, then per width: maxpool-conv-BN-ReLU-conv-BN-ReLU; global max-pool; dense.

    Built for TensorFlow Lite Micro: ReLU only (TFLM has no GELU), and every stage pools *before* its
    convolutions, so the largest activations (the stem's, at 32x32) are the only full-size ones the
    interpreter's arena must hold and most MACs run at 16x16 or below (fast on LiteRT too).
    ``residual=True`` adds each stage's second conv to its input before the ReLU, as ResNet-8 (MLPerf Tiny)
    does: no parameters, one int8 ADD per stage (a TFLite Micro op).
    """
    inp = pixels_input()
    x = standardize(inp)
    for i, c in enumerate(stem):
        x = layers.Conv2D(c, 3, padding="same", use_bias=False, name="stem" if i == 0 else None)(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = layers.Activation("relu")(x)
    for w in widths:
        x = layers.MaxPooling2D()(x)
        x = _conv_bn_act(x, w, None, "relu")
        if residual:
            x = layers.Activation("relu")(layers.Add()([x, _conv_bn(x, w)]))
        else:
            x = _conv_bn_act(x, w, None, "relu")
    x = layers.GlobalMaxPooling2D()(x)
    return keras.Model(inp, classifier(x), name=name)


@register(family="edge")
def edge_micro() -> keras.Model:
    """Microcontroller convnet: stem 16/24 at 32x32, stages 40/60 at 16x16 and 8x8, ReLU only."""
    return micro_convnet("edge_micro", stem=(16, 24), widths=(40, 60))


@register(family="edge")
def edge_nano(stem: Sequence[int] = (16,), widths: Sequence[int] = (32, 64), residual: bool = False) -> keras.Model:
    """Microcontroller convnet at 0.10x the reference's latency: one 16-channel conv at 32x32, stages 32/64.

    edge_micro with its second full-resolution conv removed and every width a multiple of 16, the tile
    XNNPACK's int8 kernels compute in (a 24/40/60-wide layer costs as much as a 32/48/64-wide one).
    Untrained int8 probes on this CPU, one LiteRT thread: 7.5 MMACs at 0.10x, edge_micro's 13.3 at 0.16x.
    The keywords (a recipe's ``model_kwargs``, a probe's ``edge_nano:stem=(32,)``) try other widths and
    ResNet-8's skip connections within the tiny budget (100 KB file, 0.12x latency).
    """
    return micro_convnet("edge_nano", stem=tuple(stem), widths=tuple(widths), residual=residual)
