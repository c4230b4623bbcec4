"""Learning-rate schedules, serialisable so a checkpoint restores the optimizer exactly."""

from __future__ import annotations

import math
from typing import get_args

import keras
from keras import ops

from edgecifar.train.recipes import Schedule


class _Warmed(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule of ``total_steps`` that rises to ``peak`` over the ``warmup`` fraction and ends at ``floor``;
    its four settings are its whole config, so a checkpoint restores it exactly."""

    def __init__(self, peak: float, total_steps: int, warmup: float, floor: float = 0.0):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup = float(warmup)
        self.floor = float(floor)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup, "floor": self.floor}


@keras.saving.register_keras_serializable(package="edgecifar")
class OneCycle(_Warmed):
    """Linear warm-up from ~0 to ``peak`` over ``warmup`` of the steps, then linear decay to ~0."""

    def __init__(self, peak: float, total_steps: int, warmup: float = 0.2, floor: float = 0.0):
        super().__init__(peak, total_steps, warmup, floor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = float(max(self.total_steps, 1))
        up = max(self.warmup * total, 1.0)
        rise = step / up
        fall = (total - step) / max(total - up, 1.0)
        frac = ops.clip(ops.minimum(rise, fall), 0.0, 1.0)
        return self.floor + (self.peak - self.floor) * frac


@keras.saving.register_keras_serializable(package="edgecifar")
class Cosine(_Warmed):
    """Linear warm-up from ~0 to ``peak`` over ``warmup`` of the steps, then a half cosine down to ``floor``."""

    def __init__(self, peak: float, total_steps: int, warmup: float = 0.0, floor: float = 0.0):
        super().__init__(peak, total_steps, warmup, floor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = float(max(self.total_steps, 1))
        up = self.warmup * total
        rise = self.peak * step / max(up, 1.0)
        progress = ops.clip((step - up) / max(total - up, 1.0), 0.0, 1.0)
        fall = self.floor + (self.peak - self.floor) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < up, rise, fall)


#: One per ``recipes.Schedule`` name (the recipe table's names are the home; this table must cover them).
SCHEDULES = {
    "constant": lambda peak, total_steps, warmup: peak,
    "one_cycle": OneCycle,
    "cosine": Cosine,
}
if set(SCHEDULES) != set(get_args(Schedule)):
    raise ImportError(f"train/schedule.py: SCHEDULES {sorted(SCHEDULES)} differ from recipes.Schedule {get_args(Schedule)}")


def make(kind: str, peak: float, total_steps: int, warmup: float):
    """The recipe's learning rate (``Recipe.schedule``): a constant ``peak``, or a schedule over ``total_steps``."""
    try:
        return SCHEDULES[kind](peak, total_steps, warmup)
    except KeyError:
        raise ValueError(f"unknown schedule {kind!r}") from None
