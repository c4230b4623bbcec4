"""Model size figures: parameters and multiply-accumulates per image."""

from __future__ import annotations

import math

import keras


def _shape(t) -> tuple:
    return tuple(int(d) if d is not None else 1 for d in t.shape)


def layer_macs(layer) -> int:
    """MACs of one layer for a single image (convolutions and dense layers; the rest is negligible)."""
    if isinstance(layer, keras.Model):
        return sum(layer_macs(sub) for sub in layer.layers)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = _shape(layer.output)
        kh, kw = layer.kernel_size
        return math.prod(out[1:]) * kh * kw
    if isinstance(layer, keras.layers.Conv2D):  # includes SeparableConv's pointwise-free subclasses
        out = _shape(layer.output)
        kh, kw = layer.kernel_size
        in_ch = _shape(layer.input)[-1] // getattr(layer, "groups", 1)
        return math.prod(out[1:]) * kh * kw * in_ch
    if isinstance(layer, keras.layers.Dense):
        inp = _shape(layer.input)
        return math.prod(inp[1:]) * layer.units
    return 0


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates per image, summed over every convolution and dense layer."""
    return sum(layer_macs(layer) for layer in model.layers)


def count_params(model: keras.Model) -> int:
    return int(model.count_params())
