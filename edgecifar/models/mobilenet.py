"""MobileNetV2 transfer-learning heads on an ImageNet backbone, as in the seed notebook.

The 32x32 pixels are resized to 96x96 and scaled to [-1, 1] inside the model. The backbone is the sub-model
named ``backbone``; what of it trains is the recipe's decision (train/finetune.py): the notebook's heads freeze
it (a frozen BatchNorm runs in inference mode), the fine-tuning recipes unfreeze it after the head has trained.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
from keras import layers

from edgecifar.errors import ModelError
from edgecifar.models.layers import classifier, pixels_input
from edgecifar.models.registry import register

BACKBONE = "backbone"   # train/finetune.py freezes and unfreezes the sub-model of this name

WEIGHTS_VAR = "EDGECIFAR_WEIGHTS"


def weights_filename(alpha: float) -> str:
    """Keras' file name for the no-top ImageNet MobileNetV2 weights of width ``alpha``."""
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha:g}_224_no_top.h5"


def resolve_weights(weights: str | None, alpha: float) -> str | None:
    """Find the backbone weights: an explicit file or folder, ``$EDGECIFAR_WEIGHTS``, Keras' cache,
    else ``"imagenet"`` (Keras downloads them). ``"none"`` means random initialisation."""
    if weights in ("none", "random"):
        return None
    if weights == "imagenet":
        return "imagenet"
    fname = weights_filename(alpha)
    given = weights or os.environ.get(WEIGHTS_VAR)
    if given:
        path = Path(given)
        path = path / fname if path.is_dir() else path
        if not path.is_file():
            raise ModelError(f"{path}: no MobileNetV2 weights file (width {alpha:g} needs {fname})")
        return str(path)
    cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / fname
    return str(cached) if cached.is_file() else "imagenet"


def _backbone(alpha: float, size: int, weights: str | None) -> keras.Model:
    resolved = resolve_weights(weights, alpha)
    try:
        base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha,
                                              include_top=False, weights=resolved, name=BACKBONE)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{resolved}: cannot load MobileNetV2 width {alpha:g} weights ({exc}); "
                         f"point ${WEIGHTS_VAR} at a local copy") from None
    except Exception as exc:  # Keras' get_file raises a bare Exception when the download fails
        if resolved != "imagenet":
            raise
        raise ModelError(f"cannot download the ImageNet MobileNetV2 width {alpha:g} weights for {size}x{size} "
                         f"({str(exc).splitlines()[0]}); point ${WEIGHTS_VAR} at a local copy of "
                         f"{weights_filename(alpha)}") from None
    return base


def _head_model(name: str, head, alpha: float, size: int, weights: str | None) -> keras.Model:
    inp = pixels_input()
    x = layers.Resizing(size, size, interpolation="bilinear", name="resize")(inp)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mobilenet_scale")(x)
    x = _backbone(alpha, size, weights)(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, classifier(head(x)), name=name)


@register(family="mobilenetv2")
def mnv2_dense128(alpha: float = 0.35, size: int = 96, weights: str | None = None) -> keras.Model:
    """ImageNet MobileNetV2 at 96x96, GAP -> Dense 128 ReLU -> Dense 10."""
    return _head_model("mnv2_dense128", lambda x: layers.Dense(128, activation="relu")(x), alpha, size, weights)


@register(family="mobilenetv2")
def mnv2_dropout(alpha: float = 0.35, size: int = 96, weights: str | None = None) -> keras.Model:
    """ImageNet MobileNetV2 at 96x96, GAP -> Dropout 0.3 -> Dense 10."""
    return _head_model("mnv2_dropout", lambda x: layers.Dropout(0.3)(x), alpha, size, weights)
