"""Transfer learning: train a new head on a frozen ImageNet backbone, then the whole network, the backbone slower.

What: a recipe with ``freeze="backbone"`` starts with the model's ``backbone`` sub-model frozen (its BatchNorm in
inference mode, ImageNet statistics); after ``unfreeze_at`` epochs the backbone trains too, at ``backbone_lr``
times the head's learning rate, under a new optimizer that runs the recipe's schedule over the remaining epochs.
Why: a randomly initialised head sends large, meaningless gradients into pretrained features; once the head
fits, the whole network adapts to the new images (the Keras transfer-learning guide's two stages; per-group
rates as airbench94.py's ``param_configs``, discriminative rates as in Howard & Ruder 2018, ULMFiT).

Top blocks first (``unfreeze_top``): at ``unfreeze_at`` only the top N of MobileNetV2's 16 inverted-residual
blocks (and the 1x1 convolution after them) train, from ``unfreeze_all_at`` the whole backbone. The top blocks hold
the most ImageNet-specific features, the lower ones more general ones (edges, colours, textures): the head and the
top adapt before gradients reach the general features (ULMFiT's gradual unfreezing, Howard & Ruder 2018, a layer
group at a time from the top; TensorFlow's MobileNetV2 transfer-learning tutorial fine-tunes from layer 100 up).

The BatchNorm trap: Keras' MobileNetV2 builds its BatchNorm layers with momentum 0.999. Once the backbone
trains in training mode, its moving statistics are ``momentum ** steps`` stale (``stale_share``): 0.999 leaves
55% of the old statistics after 600 steps, so a model evaluated after its first fine-tuning epoch sees
statistics of weights that no longer exist. A recipe picks one remedy: ``bn_momentum`` (a momentum suited to the
step count, set on every BatchNorm layer at build time) or ``bn_frozen`` (the unfrozen backbone's BatchNorm stays
in inference mode with the ImageNet statistics, its scale and offset fixed).

The third remedy, statistics re-estimated after training (``reestimate_bn``), is measured on trained runs rather
than a recipe setting. The maths is pure (``stale_share``, ``GroupAdam.update_step`` in train/optimizers.py, ``top_block_layers``);
``unfreeze`` only flips trainable flags.
"""

from __future__ import annotations

import re
from pathlib import Path

import keras

from edgecifar.errors import EdgeCifarError
from edgecifar.models.mobilenet import BACKBONE
from edgecifar.train.checkpoint import load_checkpoint
from edgecifar.train.pipeline import predict


def stale_share(momentum: float, steps: int) -> float:
    """The weight that statistics from before ``steps`` training steps still carry in a BatchNorm moving average."""
    return momentum ** steps


def backbone_layer(model):
    """The model's pretrained sub-model, or a one-line error naming the model when it has none."""
    try:
        return model.get_layer(BACKBONE)
    except ValueError:
        raise EdgeCifarError(f"model {model.name!r} has no sub-model named {BACKBONE!r} to freeze") from None


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer of ``model``, nested sub-models included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def set_bn_momentum(model, momentum: float) -> None:
    for layer in batchnorm_layers(model):
        layer.momentum = momentum


def reestimate_bn(model, images, batch: int = 100) -> int:
    """Replace every BatchNorm layer's moving statistics by the plain average of its batch statistics over
    ``images`` (float pixels, the model's input), the weights fixed: momentum ``(k - 1) / k`` at batch ``k``, as
    PyTorch's ``swa_utils.update_bn``. Layers frozen for training are re-estimated too. Returns the batch count."""
    layers = batchnorm_layers(model)
    saved = [(layer, layer.momentum, layer.trainable) for layer in layers]
    k = 0
    try:
        for layer in layers:
            layer.trainable = True
        for k, start in enumerate(range(0, len(images), batch), start=1):
            for layer in layers:
                layer.momentum = (k - 1) / k
            model(images[start:start + batch], training=True)
    finally:
        for layer, momentum, trainable in saved:
            layer.momentum, layer.trainable = momentum, trainable
    return k


# Keras' MobileNetV2 layer names (keras.applications.MobileNetV2, checked on Keras 3.15): the stem ``Conv1``,
# ``bn_Conv1``, ``Conv1_relu``; block 0 ``expanded_conv_*``; blocks 1..16 ``block_<i>_*`` (expand, depthwise,
# project, their BatchNorm and ReLU, ``_pad`` and ``_add`` where present); then the tail below.
_BLOCK = re.compile(r"block_(\d+)_")
MOBILENETV2_TAIL = ("Conv_1", "Conv_1_bn", "out_relu")   # the 1x1 convolution to 1280 channels after block 16


def top_block_layers(backbone, n: int) -> list:
    """The layers of MobileNetV2 ``backbone``'s top ``n`` inverted-residual blocks and of the tail after them, in
    the backbone's order; a one-line error when it has fewer than ``n`` numbered blocks."""
    blocks = {int(m.group(1)) for layer in backbone.layers if (m := _BLOCK.match(layer.name))}
    if not 1 <= n <= len(blocks):
        raise EdgeCifarError(f"sub-model {backbone.name!r} has {len(blocks)} numbered MobileNetV2 blocks; "
                             f"cannot unfreeze the top {n}")
    first = max(blocks) - n + 1
    return [layer for layer in backbone.layers
            if layer.name in MOBILENETV2_TAIL or ((m := _BLOCK.match(layer.name)) and int(m.group(1)) >= first)]


def unfreeze(model, bn_frozen: bool, top: int | None = None) -> list[str]:
    """Let the backbone train, or only its top ``top`` blocks (``top_block_layers``), their BatchNorm layers too
    unless ``bn_frozen``; return the backbone's trainable variables' paths."""
    backbone = backbone_layer(model)
    backbone.trainable = True
    # Each layer set one by one: the container passes its flag down only when it changes (Keras' TensorFlow backend
    # skips ``x.trainable = x.trainable``, KerasAutoTrackable.__setattr__), and after the top stage it is True already.
    thawed = None if top is None else {id(layer) for layer in top_block_layers(backbone, top)}
    for layer in backbone.layers:
        layer.trainable = thawed is None or id(layer) in thawed
    if bn_frozen:
        for layer in batchnorm_layers(backbone):
            layer.trainable = False
    return [v.path for v in backbone.trainable_weights]


def compare_statistics(model_path, data: str | None, val_size: int, images: int = 5000) -> dict:
    """Validation accuracy of a trained model with its moving BatchNorm statistics, then with statistics
    re-estimated (``reestimate_bn``) on ``images`` training images outside the validation split (no augmentation)."""
    import numpy as np

    from edgecifar import data as cifar
    from edgecifar.metrics import accuracy

    path = Path(model_path)
    if (path / "model.keras").is_file():
        model = keras.models.load_model(path / "model.keras", compile=False)
    elif (path / "checkpoint" / "state.json").is_file():
        model = load_checkpoint(path)[0]
    elif path.suffix == ".keras" and path.is_file():
        model = keras.models.load_model(path, compile=False)
    else:
        raise EdgeCifarError(f"{path}: no model.keras, checkpoint or .keras file")
    ds = cifar.load(data)
    tr_idx, val_idx = cifar.stratified_split(ds.y_train, val_size, seed=0)
    x_val, y_val = ds.x_train[val_idx], ds.y_train[val_idx]
    before = accuracy(predict(model, x_val), y_val)
    sample = np.random.default_rng(0).permutation(tr_idx)[:images]
    batches = reestimate_bn(model, ds.x_train[sample].astype(np.float32))
    return {"model": str(path), "val_images": len(y_val), "moving": round(before, 4),
            "reestimated": round(accuracy(predict(model, x_val), y_val), 4), "images": len(sample), "batches": batches}


def main(argv: list[str] | None = None) -> None:
    """``python -m edgecifar.train.finetune RUN_OR_KERAS... [--val-size N] [--images N]``: one JSON line per model."""
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(description=compare_statistics.__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data")
    ap.add_argument("--val-size", type=int, default=2000)
    ap.add_argument("--images", type=int, default=5000)
    args = ap.parse_args(argv)
    try:
        for m in args.models:
            print(json.dumps(compare_statistics(m, args.data, args.val_size, args.images)), flush=True)
    except EdgeCifarError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":  # pragma: no cover
    main()
