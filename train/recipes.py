"""Training recipes: an architecture from the model registry plus the settings it trains with.

One declarative table, looked up by name. ``edgecifar train RECIPE`` reads it; flags override
epochs and batch size only, so a recipe name plus a seed reproduces a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from edgecifar.errors import ModelError
from edgecifar.host import NATIVE_BF16, native_bf16

Augment = Literal["none", "seed", "flip_translate", "flip_translate_cutout", "altflip_translate"]   # train/augment.py
Schedule = Literal["constant", "one_cycle", "cosine"]   # train/schedule.py
MOBILENETV2_BLOCKS = 16   # inverted-residual blocks above the stem's block 0 (Keras: block_1 .. block_16)


@dataclass(frozen=True)
class Recipe:
    """What to train and how. ``schedule`` defaults to one-cycle for ``sgd`` and a constant rate for ``adam``."""

    name: str
    model: str
    description: str
    epochs: int
    batch_size: int
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3                      # the constant rate, or the schedule's peak
    schedule: Schedule | None = None      # None: one_cycle for SGD, constant for Adam
    warmup: float = 0.2                   # one-cycle, cosine: fraction of steps rising to the peak
    momentum: float = 0.9
    weight_decay: float = 0.0             # decoupled (scaled by the learning rate), SGD only
    label_smoothing: float = 0.0
    augment: Augment = "none"
    early_stopping: int | None = None     # patience in epochs on the ``select`` figure (best weights restored)
    select: Literal["last", "val_loss", "val_accuracy"] = "last"   # the epoch kept: the last, or the best by this
    early_stopping_from: int = 0          # epochs (from the first) that patience and selection ignore
    mixed_bfloat16: bool = False          # the recipe's wish: bf16 helps plain convolutions where the CPU runs bf16
                                          # natively, hurts depthwise ones (resolve_precision decides)
    ema: float | None = None              # per-step decay of the weight average evaluated and shipped (train/ema.py)
    whiten_stem: bool = False             # stem = frozen PCA whitening of training patches (train/whiten.py)
    distill: str | None = None            # teacher model file (path, or zoo file name) for soft targets (train/distill.py)
    distill_alpha: float = 0.5            # weight of the teacher's probabilities in each target (rest: the label)
    distill_views: int = 0                # augmented views per image the teacher labels before training (0: the clean
                                          # image and its mirror; train/distill.py)
    # transfer learning (train/finetune.py)
    freeze: Literal["none", "backbone"] = "none"   # frozen when training starts (frozen BatchNorm: inference mode)
    unfreeze_at: int | None = None        # epochs after which the frozen backbone trains too (None: never)
    unfreeze_top: int | None = None       # MobileNetV2 blocks (top first) that train from unfreeze_at (None: all)
    unfreeze_all_at: int | None = None    # epochs after which the whole backbone trains (with unfreeze_top)
    backbone_lr: float = 1.0              # the backbone's learning rate as a fraction of lr, once it trains
    bn_momentum: float | None = None      # every BatchNorm layer's (None: the builder's; MobileNetV2's is 0.999)
    bn_frozen: bool = False               # the unfrozen backbone's BatchNorm stays in inference mode
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.schedule is None:  # recorded explicitly in metrics.json
            object.__setattr__(self, "schedule", "one_cycle" if self.optimizer == "sgd" else "constant")

    def with_overrides(self, **changes: Any) -> "Recipe":
        """This recipe with ``changes`` (None keeps a setting), checked as the table's rows are: an override that
        leaves it unable to train as written (``--epochs`` at or below ``unfreeze_at``, say) is refused with
        :func:`check_recipes`' message, as one line (ModelError)."""
        recipe = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        try:
            check_recipes({recipe.name: recipe})
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        return recipe


#: ``--precision``: auto (the recipe's wish, where the CPU runs bf16 natively), or one Keras dtype policy for any CPU.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
PRECISION_CHOICES = ("auto", *POLICIES)
#: auto's verdict, by (the recipe asks for bf16, the CPU runs bf16 natively): (bf16 or not, why).
_AUTO = {
    (False, False): (False, "the recipe trains in float32"),
    (False, True): (False, "the recipe trains in float32"),
    (True, True): (True, "the recipe asks for mixed bfloat16 and this CPU runs bf16 natively ({found})"),
    (True, False): (False, "the recipe asks for mixed bfloat16, but this CPU has no {wanted}: emulated bf16 trains "
                           "several times slower (--precision bfloat16 forces it)"),
}


@dataclass(frozen=True)
class Precision:
    """The Keras dtype policy a run trains in, and why (printed in one line, kept in metrics.json)."""

    policy: str          # "float32" or "mixed_bfloat16"
    reason: str

    @property
    def bf16(self) -> bool:
        return self.policy == POLICIES["bfloat16"]


def resolve_precision(wish_bf16: bool, choice: str, features: tuple[str, ...]) -> Precision:
    """The precision a new run trains in: ``--precision`` when it names one, else (auto) the recipe's bf16 wish
    only where the CPU (``features``, edgecifar.host) runs bf16 natively: emulated, mixed_bfloat16 costs 6-8x."""
    native = native_bf16(features)
    if choice != "auto":
        slow = " (emulated on this CPU: slow)" if choice == "bfloat16" and not native else ""
        return Precision(POLICIES[choice], f"--precision {choice}{slow}")
    bf16, why = _AUTO[(wish_bf16, native)]
    found = ", ".join(f for f in features if f in NATIVE_BF16)
    return Precision(POLICIES["bfloat16" if bf16 else "float32"],
                     why.format(found=found, wanted=" or ".join(NATIVE_BF16)))


def ladder_protocol(name: str) -> tuple[str, str]:
    """(rung, protocol) of a recipe name: ``bn_gap_sound`` -> (``bn_gap``, ``sound``); any other is ``notebook``."""
    for protocol, suffix in PROTOCOLS.items():
        if suffix and name.endswith(suffix):
            return name[: -len(suffix)], protocol
    return name, "notebook"


def check_recipes(recipes: dict[str, Recipe]) -> None:
    """Combinations that cannot train as written, refused at import rather than after the data has loaded."""
    for r in recipes.values():
        if r.schedule not in get_args(Schedule):
            raise ValueError(f"recipe {r.name}: unknown schedule {r.schedule!r}")
        if r.augment not in get_args(Augment):
            raise ValueError(f"recipe {r.name}: unknown augment {r.augment!r}")
        if r.unfreeze_at is not None and (r.freeze == "none" or not 0 < r.unfreeze_at < r.epochs):
            raise ValueError(f"recipe {r.name}: unfreeze_at needs a frozen backbone and a value in 1..epochs-1 "
                             f"(freeze {r.freeze}, unfreeze_at {r.unfreeze_at}, epochs {r.epochs})")
        if r.unfreeze_top is not None and r.unfreeze_at is None:
            raise ValueError(f"recipe {r.name}: unfreeze_top needs unfreeze_at (the epoch its blocks start training)")
        if r.unfreeze_top is not None and not 1 <= r.unfreeze_top <= MOBILENETV2_BLOCKS:
            raise ValueError(f"recipe {r.name}: unfreeze_top must be in 1..{MOBILENETV2_BLOCKS} (MobileNetV2's blocks)")
        if r.unfreeze_all_at is not None and (r.unfreeze_top is None or r.unfreeze_at is None
                                              or not r.unfreeze_at < r.unfreeze_all_at < r.epochs):
            raise ValueError(f"recipe {r.name}: unfreeze_all_at needs unfreeze_top and a value between unfreeze_at "
                             f"and epochs, exclusive (unfreeze_top {r.unfreeze_top}, unfreeze_at {r.unfreeze_at}, "
                             f"unfreeze_all_at {r.unfreeze_all_at}, epochs {r.epochs})")
        if r.backbone_lr != 1.0 and (r.unfreeze_at is None or r.optimizer != "adam"):
            raise ValueError(f"recipe {r.name}: backbone_lr applies to an unfrozen backbone under Adam")
        if r.bn_frozen and r.unfreeze_at is None:
            raise ValueError(f"recipe {r.name}: bn_frozen applies to a backbone that is unfrozen (unfreeze_at)")
        if r.early_stopping and r.select == "last":
            raise ValueError(f"recipe {r.name}: early stopping restores the best epoch by its select figure "
                             "(val_loss or val_accuracy), not the last")
        if not 0 <= r.early_stopping_from < r.epochs:
            raise ValueError(f"recipe {r.name}: early_stopping_from must be in 0..epochs-1 "
                             f"(early_stopping_from {r.early_stopping_from}, epochs {r.epochs})")
        if r.distill_views and not r.distill:
            raise ValueError(f"recipe {r.name}: distill_views needs a teacher (distill)")
        if r.bn_momentum is not None and not 0.0 < r.bn_momentum < 1.0:
            raise ValueError(f"recipe {r.name}: bn_momentum must be between 0 and 1")


_LADDER = "seed notebook ladder"
_SGD = dict(optimizer="sgd", momentum=0.9)
# Adam, cosine per stage (head 1e-3, backbone 5e-4), label smoothing 0.1, flip + 2-pixel translate.
_FINETUNE = dict(schedule="cosine", warmup=0.05, label_smoothing=0.1, augment="flip_translate", freeze="backbone",
                 unfreeze_at=1, backbone_lr=0.5)
# The edge models' one-cycle SGD (train/schedule.py) with flip + 2-pixel translate.
_EDGE = dict(lr=0.4, weight_decay=5e-4, augment="flip_translate", mixed_bfloat16=True, **_SGD)
# Distillation from the zoo's best file (mnv2_ft160, six-view TTA, int8), its probabilities weighted 0.8.
_KD160 = dict(distill="mnv2_ft160_tta6_int8.tflite", distill_alpha=0.8)
# Where each recipe's figures live: one row of a results table per run (the tables name seeds, images and CPU).
LADDER_TABLE = "research/results/ladder.md"
FINETUNE_TABLE = "research/results/finetune.md"
ABLATIONS_TABLE = "research/results/ablations.md"
BENCH_TABLE = "bench/results/bench.md"


def _evidence(table: str, row: str) -> str:
    return f"measured: {table}, row {row}"


def _ladder(name: str, model: str, what: str, epochs: int, batch: int, **kw: Any) -> Recipe:
    return Recipe(name, model, f"{_LADDER}: {what}; {_evidence(LADDER_TABLE, name + ' notebook')}", epochs, batch, **kw)


#: The recipes the product ships: the seed ladder, transfer learning, the edge models and the zoo's students.
#: Experiments (ablations, variants) live in research/recipes.py and join this table through ``register``.
RECIPES: dict[str, Recipe] = {}


def register(*recipes: Recipe) -> None:
    """Add rows to ``RECIPES``, each checked as the table's are; a name already taken is refused (ValueError):
    a research recipe can never shadow a shipped one."""
    for r in recipes:
        if r.name in RECIPES:
            raise ValueError(f"recipe {r.name}: already registered")
    check_recipes({r.name: r for r in recipes})
    RECIPES.update({r.name: r for r in recipes})


register(
    _ladder("baseline", "baseline", "Conv32-Pool-Conv64-Pool-Dense128, Adam", 10, 64),
    _ladder("deeper", "deeper", "+ Conv128, Dense256, Dropout 0.5", 20, 64),
    _ladder("bn_gap", "bn_gap", "+ BatchNorm, global average pooling", 20, 64),
    _ladder("l2", "l2", "+ L2 weight decay 1e-4", 20, 64),
    _ladder("early_stop", "l2", "l2 with early stopping (patience 3) on validation loss", 20, 64, early_stopping=3,
            select="val_loss"),
    _ladder("augment", "l2", "l2 with rotation 15, shifts 0.1, zoom 0.1, horizontal flip", 20, 64, augment="seed"),
    _ladder("mnv2_dense128", "mnv2_dense128", "frozen ImageNet MobileNetV2 @96, GAP-Dense128-Dense10", 5, 32,
            freeze="backbone"),
    _ladder("mnv2_dropout", "mnv2_dropout", "frozen ImageNet MobileNetV2 @96, GAP-Dropout0.3-Dense10", 10, 32,
            freeze="backbone"),
    # Fine-tuning the width-0.35 ImageNet backbone (train/finetune.py): 1 head epoch, then everything.
    Recipe("mnv2_ft96", "mnv2_dropout", "MobileNetV2 0.35 @96 fine-tuned, BatchNorm momentum 0.99; "
           + _evidence(FINETUNE_TABLE, "mnv2_ft96"), 8, 64, bn_momentum=0.99, **_FINETUNE),
    Recipe("mnv2_ft128", "mnv2_dropout", "mnv2_ft96 at 128x128 input, 1.8x the MACs; "
           + _evidence(FINETUNE_TABLE, "mnv2_ft128"), 8, 64, bn_momentum=0.99, model_kwargs={"size": 128}, **_FINETUNE),
    Recipe("mnv2_ft160", "mnv2_dropout", "mnv2_ft96 at 160x160 input, 2.8x the MACs (the zoo's best point with six-view "
           "test-time augmentation, and the students' teacher); " + _evidence(FINETUNE_TABLE, "mnv2_ft160"), 8, 64,
           bn_momentum=0.99, model_kwargs={"size": 160}, **_FINETUNE),
    Recipe("resnet8", "resnet8", "MLPerf Tiny ResNet-8 (the tiny model's reference), SGD one-cycle, label smoothing, "
           "flip+translate", 40, 128, lr=0.2, label_smoothing=0.1, augment="flip_translate", **_SGD),
    Recipe("edge_best", "edge_best", "plain convnet 64/256/256, one-cycle SGD, bf16, flip+translate; "
           + _evidence(BENCH_TABLE, "edge_best_int8.tflite"), 30, 512, label_smoothing=0.2, **_EDGE),
    Recipe("edge_fast", "edge_fast", "plain convnet 32/128/128, one-cycle SGD, bf16, flip+translate; "
           + _evidence(ABLATIONS_TABLE, "edge_fast-e10-seed0 (10 epochs)"), 30, 256, label_smoothing=0.2, **_EDGE),
    Recipe("edge_tiny", "edge_tiny", "plain convnet 24/32/64 at full resolution, one-cycle SGD, bf16, flip+translate",
           40, 256, label_smoothing=0.1, **_EDGE),
    Recipe("edge_micro", "edge_micro", "ReLU convnet for TFLite Micro (stem 16/24, stages 40/60), one-cycle SGD, "
           "bf16, flip+translate; " + _evidence(ABLATIONS_TABLE, "edge_micro"), 40, 256, label_smoothing=0.1, **_EDGE),
    Recipe("edge_nano", "edge_nano", "ReLU convnet for TFLite Micro at 0.10x the reference (stem 16, stages 32/64), "
           "twice edge_micro's epochs; " + _evidence(ABLATIONS_TABLE, "edge_nano"), 80, 256, label_smoothing=0.1,
           **_EDGE),
    # The zoo's students: soft targets from a zoo file (train/distill.py).
    Recipe("edge_micro_kd", "edge_micro", "edge_micro distilled from the zoo's edge_best int8 (soft targets, weight "
           "0.5); " + _evidence(ABLATIONS_TABLE, "edge_micro_kd"), 40, 256, label_smoothing=0.1,
           distill="edge_best_int8.tflite", distill_alpha=0.5, **_EDGE),
    Recipe("edge_nano_kd160", "edge_nano", "edge_nano distilled from mnv2_ft160_tta6 int8 (soft targets, weight 0.8); "
           + _evidence(ABLATIONS_TABLE, "edge_nano_kd160 and edge_nano_kd160-seed1"), 80, 256, label_smoothing=0.1,
           **_KD160, **_EDGE),
    Recipe("edge_fast_kd160_e60", "edge_fast", "edge_fast with a whitening stem and weight averaging (EMA 0.99 per "
           "step), distilled from mnv2_ft160_tta6 int8 (weight 0.8), 60 epochs; "
           + _evidence(ABLATIONS_TABLE, "edge_fast_kd160_e60 and edge_fast_kd160_e60-seed1"), 60, 256,
           label_smoothing=0.2, whiten_stem=True, ema=0.99, **_KD160, **_EDGE),
)

# The seed ladder under a sound protocol (issue 12): the same architectures and batch; Adam decaying on a cosine
# from the notebook's constant 1e-3; BatchNorm momentum 0.99 stated (Keras' default: after one epoch of 547 steps,
# 0.4% of older statistics remain, train/finetune.stale_share); the epoch with the best validation accuracy kept
# (early_stop keeps its patience on validation loss and restores that epoch, counting from the middle epoch, when
# the cosine rate has fallen to half: counted from the first, an untrained network's noisy validation loss stops
# runs after 4 epochs). The augmentation rung trains 60 epochs: its transforms are a harder task than 20 epochs of
# this network fit (issue 28; 20 epochs: research recipe augment_e20_sound).
LADDER_RUNGS = ("baseline", "deeper", "bn_gap", "l2", "early_stop", "augment")
PROTOCOLS = {"notebook": "", "sound": "_sound"}   # protocol -> recipe name suffix
SOUND_EPOCHS = {"augment": 60}


def sound(r: Recipe, **changes: Any) -> Recipe:
    """Rung ``r`` under the sound protocol (``changes``: what a research variant does differently)."""
    name = changes.pop("name", r.name + PROTOCOLS["sound"])
    epochs = changes.pop("epochs", SOUND_EPOCHS.get(r.name, r.epochs))
    return dataclasses.replace(r, name=name, epochs=epochs, schedule="cosine", warmup=0.0, bn_momentum=0.99,
                               select=r.select if r.early_stopping else "val_accuracy",
                               early_stopping_from=epochs // 2 if r.early_stopping else 0,
                               description=f"{r.name} under the sound protocol, {epochs} epochs; "
                                           f"{_evidence(LADDER_TABLE, name.removesuffix(PROTOCOLS['sound']) + ' sound')}",
                               **changes)


register(*(sound(RECIPES[n]) for n in LADDER_RUNGS))
SHIPPED = tuple(RECIPES)   # what `edgecifar train --list` shows; research/recipes.py registers more


def get(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ModelError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None

