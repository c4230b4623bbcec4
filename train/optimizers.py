"""GroupAdam, the per-group learning rates that fine-tuning recipes train with (train/finetune.py, train/assemble.py).

Registered, as train/schedule.py's schedules, because a checkpoint names it; a module of its own because loading a
checkpoint needs it (train/checkpoint.py) and train/finetune.py's measurement command loads checkpoints."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="edgecifar")
class GroupAdam(keras.optimizers.Adam):
    """Adam whose learning rate is multiplied by ``scale`` for the variables named in ``group`` (by path)."""

    def __init__(self, *args, group: list[str] | tuple[str, ...] = (), scale: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.group = list(group)
        self.scale = float(scale)
        self._scaled: frozenset[int] = frozenset()

    def build(self, variables):
        super().build(variables)
        names = set(self.group)
        self._scaled = frozenset(i for i, v in enumerate(variables) if v.path in names)

    def update_step(self, gradient, variable, learning_rate):
        # ``variable`` may be the backend's own variable (no path): look it up by the optimizer's index
        if self._get_variable_index(variable) in self._scaled:
            learning_rate = learning_rate * self.scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "group": self.group, "scale": self.scale}
