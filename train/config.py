"""What a training run depends on besides its recipe's settings: the run's options, in one place that the
runner, the checkpoint's resume policy and the distributed session read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecifar import NUM_CLASSES
from edgecifar.runs import default_run_dir
from edgecifar.train.recipes import Recipe


@dataclass
class RunConfig:
    """Everything a run depends on besides the recipe's own settings."""

    recipe: Recipe
    seed: int = 0
    out: Path | None = None
    data: str | None = None
    val_size: int = 5000
    resume: bool = False
    overwrite: bool = False
    weights: str | None = None      # MobileNetV2 backbone weights (file or folder)
    progress: bool = True
    strategy: str | None = None     # None (one process), "mirrored" or "multi-worker": see train/distributed.py
    collective_timeout: float = 120.0   # seconds a worker waits for the others before failing
    precision: str = "auto"         # --precision: auto, float32 or bfloat16 (train.recipes.resolve_precision)
    image_size: int = 32            # --image-size: a photo folder's images become this square (CIFAR-10 stays 32)
    classes: int = NUM_CLASSES      # the data's class count, set by the runner once the data is read
    user_model: Any = None          # --model net.py:build: train.usermodel.UserModel, in place of the recipe's model

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else default_run_dir(self.recipe.name, self.seed)
