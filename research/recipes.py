"""Experiment recipes: the ablations and variants behind the shipped recipes, one setting or two away from the
recipe each names. They join the product's table (``edgecifar.train.recipes.register``, which refuses a name
already taken) when this module is imported: ``python -m research train NAME ...`` runs them. Each row's figures
are in research/results/ (ablations.md, finetune.md, ladder.md), one row per run.
"""

from __future__ import annotations

import dataclasses

from edgecifar.train.recipes import RECIPES, Recipe, register, sound

_ = dataclasses.replace
_MNV2_BN99 = dict(bn_momentum=0.99)


def _kd(base: str, name: str, what: str, **changes) -> Recipe:
    return _(RECIPES[base], name=name, description=f"{base} {what}", **changes)


register(
    # Issue 12: the notebook's transfer-learning head at batch 64; the augmentation rung at the ladder's 20 epochs,
    # and with the standard CIFAR augmentation (flip + 2-pixel translation) instead of the notebook's transforms.
    _(RECIPES["mnv2_dropout"], name="mnv2_dropout_b64", batch_size=64, description="mnv2_dropout with batch 64"),
    sound(RECIPES["augment"], name="augment_e20_sound", epochs=20),
    sound(RECIPES["augment"], name="augment_light_sound", epochs=20, augment="flip_translate"),
    sound(RECIPES["l2"], name="l2_e60_sound", epochs=60),
    # Issue 10: MobileNetV2 fine-tuning's BatchNorm and unfreezing choices.
    _(RECIPES["mnv2_ft96"], name="mnv2_ft96_bn999", bn_momentum=None,
      description="mnv2_ft96 with Keras' BatchNorm momentum 0.999 (the trap)"),
    _(RECIPES["mnv2_ft96"], name="mnv2_ft96_bnfrozen", bn_momentum=None, bn_frozen=True,
      description="mnv2_ft96 with the backbone's BatchNorm in inference mode"),
    _(RECIPES["mnv2_ft96"], name="mnv2_ft96_top", unfreeze_top=4, unfreeze_all_at=3,
      description="mnv2_ft96 unfreezing the top 4 blocks after the head epoch, everything after epoch 3"),
    # Issue 11: airbench's pieces on edge_fast (`--epochs 10` for the short schedule). EMA 0.99 per step: a
    # ~100-step window against edge_fast's 176 steps per epoch; 0.999's 1,000 steps would span more than half of a
    # 10-epoch run and average in its early, high-rate weights.
    _(RECIPES["edge_fast"], name="edge_fast_wema", whiten_stem=True, ema=0.99,
      description="edge_fast + whitening stem + EMA (decay 0.99 per step)"),
    # BatchNorm as airbench94.py sets it (KellerJordan/cifar10-airbench, class BatchNorm and hyp['net']): weight
    # fixed at 1 and untrained, bias trained; PyTorch's momentum=1-0.6 is Keras' 0.6.
    _(RECIPES["edge_fast"], name="edge_fast_air", whiten_stem=True, ema=0.99, augment="altflip_translate",
      model_kwargs={"bn_scale": False}, bn_momentum=0.6,
      description="edge_fast_wema + BatchNorm bias only + alternating flip"),
    # Issue 11: teachers for the students (edge_best int8, mnv2_ft128 int8, then mnv2_ft160_tta6 int8 in the product).
    _kd("edge_nano", "edge_nano_kd", "distilled from the zoo's edge_best int8 (weight 0.5)",
        distill="edge_best_int8.tflite", distill_alpha=0.5),
    _kd("edge_nano", "edge_nano_kd128", "distilled from mnv2_ft128 int8 (weight 0.5)",
        distill="mnv2_ft128_int8.tflite", distill_alpha=0.5),
    _kd("edge_fast_kd160_e60", "edge_fast_kd128", "at 30 epochs, distilled from mnv2_ft128 int8 (weight 0.5)",
        epochs=30, distill="mnv2_ft128_int8.tflite", distill_alpha=0.5),
    _kd("edge_fast_kd160_e60", "edge_fast_kd160", "at 30 epochs", epochs=30),
)
register(
    # Issue 11: one setting away from the kd160 students.
    _kd("edge_nano_kd160", "edge_nano_kd160_e120", "for 120 epochs", epochs=120),
    _kd("edge_nano_kd160", "edge_nano_kd160_ls0", "without label smoothing on the soft targets", label_smoothing=0.0),
    _kd("edge_fast_kd160", "edge_fast_relu_kd160", "with ReLU instead of GELU", model_kwargs={"act": "relu"}),
    _kd("edge_nano_kd160", "edge_nano_kd160_res", "with ResNet-8's skip connections", model_kwargs={"residual": True}),
    _kd("edge_nano_kd160", "edge_nano_kd160_cutout", "with cutout (one 8x8 mid-grey square per image)",
        augment="flip_translate_cutout"),
    _kd("edge_nano_kd160", "edge_nano_kd160_ema", "with weight averaging (EMA 0.99 per step)", ema=0.99),
)
register(
    # Issue 28: consistent teaching (train/distill.py): the teacher labels K fixed flip + translate views of each
    # image, one of which each epoch shows with its own targets.
    _kd("edge_nano_kd160", "edge_nano_kd160_v4", "with the teacher labelling 4 augmented views", distill_views=4),
    _kd("edge_nano_kd160", "edge_nano_kd160_v8", "with the teacher labelling 8 augmented views", distill_views=8),
    _kd("edge_fast_kd160_e60", "edge_fast_kd160_e60_v4", "with the teacher labelling 4 augmented views",
        distill_views=4),
    _kd("edge_fast_kd160_e60", "edge_fast_kd160_e60_v8", "with the teacher labelling 8 augmented views",
        distill_views=8),
    # Issue 28, best at the seed model's cost: mnv2_ft160 without test-time augmentation (one view, about 1x the
    # seed model) distilled from its own six-view file, so that one view carries what six carry.
    # Issue 28, tiny: a 32-wide full-resolution stem (research/results/probe-nano.md: 0.107x the seed model
    # against edge_nano's 0.088x, 86,520 B int8).
    _kd("edge_nano_kd160", "edge_nano_kd160_stem32", "with a 32-wide stem", model_kwargs={"stem": (32,)}),
    _kd("mnv2_ft160", "mnv2_ft160_kd", "distilled from its six-view TTA int8 file (weight 0.8)",
        distill="mnv2_ft160_tta6_int8.tflite", distill_alpha=0.8),
)
