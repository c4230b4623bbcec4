"""A recipe's model: built under its precision policy with its frozen parts, compiled with its optimizer and
schedule, and copied to float32 for export."""

from __future__ import annotations

from edgecifar import INPUT_SHAPE, NUM_CLASSES
from edgecifar.train.recipes import Recipe


def build_model(recipe: Recipe, weights: str | None = None, input_shape: tuple[int, int, int] = INPUT_SHAPE,
                classes: int = NUM_CLASSES, user=None, say=lambda line: None):
    """Create the recipe's model under its precision policy, for images of ``input_shape`` and ``classes``
    classes (CIFAR-10's by default; a folder of photos: its own): the registry's architecture, or ``user``'s
    (``--model net.py:build``, train/usermodel.py)."""
    import keras

    from edgecifar import models
    from edgecifar.models.layers import data_shape
    from edgecifar.train.schedule import OneCycle  # noqa: F401  (registers the schedule for checkpoints)

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if recipe.mixed_bfloat16 else "float32")
    try:
        kwargs = dict(recipe.model_kwargs)
        if models.get(recipe.model).family == "mobilenetv2":
            kwargs.setdefault("weights", weights)
        if user is not None:
            from edgecifar.train import usermodel

            model = usermodel.build(user, input_shape, classes, say)
        else:
            with data_shape(input_shape, classes):
                model = models.create(recipe.model, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if recipe.whiten_stem:  # frozen before compiling; its weights come from the data (train/whiten.py)
        from edgecifar.train.whiten import stem_layer

        stem_layer(model).trainable = False
    if recipe.bn_momentum is not None or recipe.freeze == "backbone":  # recipe decisions (train/finetune.py)
        from edgecifar.train import finetune

        if recipe.bn_momentum is not None:
            finetune.set_bn_momentum(model, recipe.bn_momentum)
        if recipe.freeze == "backbone":
            finetune.backbone_layer(model).trainable = False
    return model


def compile_model(model, recipe: Recipe, steps_per_epoch: int, epochs: int, backbone: list[str] = ()) -> None:
    """The recipe's optimizer, its schedule spanning ``epochs``; the variables whose paths are in ``backbone``
    learn at ``recipe.backbone_lr`` times the rate (train/finetune.py)."""
    import keras

    from edgecifar.train import schedule

    lr = schedule.make(recipe.schedule, recipe.lr, steps_per_epoch * epochs, recipe.warmup)
    if recipe.optimizer == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=recipe.momentum, nesterov=True,
                                   weight_decay=recipe.weight_decay or None)
    elif backbone and recipe.backbone_lr != 1.0:
        from edgecifar.train.optimizers import GroupAdam

        opt = GroupAdam(lr, group=backbone, scale=recipe.backbone_lr)
    else:
        opt = keras.optimizers.Adam(lr)
    model.compile(optimizer=opt,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
                  metrics=["accuracy"])


def float32_copy(model, recipe: Recipe, weights: str | None, user=None):
    """The same network under the float32 policy: bf16 models need it to convert to TFLite."""
    if not recipe.mixed_bfloat16:
        return model
    clone = build_model(recipe.with_overrides(mixed_bfloat16=False), weights, tuple(model.input_shape[1:]),
                        int(model.output_shape[-1]), user)
    clone.set_weights(model.get_weights())
    return clone
