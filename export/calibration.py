"""The images export uses: a validation set and a calibration set, both from the training images.

Training held out ``stratified_split(y_train, V, seed=0)`` for validation (V = the run's ``val_images``
from metrics.json, else train's default 5,000). Export reproduces that split exactly, so that:

- validation = the first ``--val-size`` (2,000) images of a stratified subset (seed 0) of that held-out
  split: images the model never trained on, classes in proportion;
- calibration = ``--calibration`` (500) images of a stratified subset (seed 0) of the *other* training
  images, so quantization never sees the images it is judged on.

Neither touches the test set. Both are deterministic for a given data set and run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgecifar.data import Cifar10, stratified_split, stratified_subset
from edgecifar.errors import DataError

TRAIN_DEFAULT_HOLDOUT = 5000   # train's --val-size default
MIN_CALIBRATION = 10
SEED = 0


@dataclass(frozen=True)
class ExportData:
    """Validation images with labels, and calibration images (float32, with a 0 and a 255 pixel)."""

    x_val: np.ndarray
    y_val: np.ndarray
    calibration: np.ndarray
    holdout: int


def split(ds: Cifar10, val_size: int, n_calibration: int, holdout: int | None = None) -> ExportData:
    """Choose the validation and calibration images, or raise one DataError line saying what is short."""
    if n_calibration < MIN_CALIBRATION:
        raise DataError(f"--calibration {n_calibration}: at least {MIN_CALIBRATION} images are needed")
    n = len(ds.y_train)
    holdout = holdout or TRAIN_DEFAULT_HOLDOUT
    if not 0 < holdout < n:
        raise DataError(f"{ds.source}: {n} training images, too few to hold out {holdout} for validation "
                        "as training did")
    train_idx, val_idx = stratified_split(ds.y_train, holdout, seed=SEED)
    if len(train_idx) < n_calibration:
        raise DataError(f"{ds.source}: calibration needs {n_calibration} images but only {len(train_idx)} "
                        f"training images lie outside the validation split (lower --calibration)")
    val_idx = val_idx[stratified_subset(ds.y_train[val_idx], val_size, seed=SEED)]
    cal_idx = train_idx[stratified_subset(ds.y_train[train_idx], n_calibration, seed=SEED)]
    return ExportData(ds.x_train[val_idx], ds.y_train[val_idx], full_range(ds.x_train[cal_idx]), holdout)


def full_range(images: np.ndarray) -> np.ndarray:
    """Float32 copy with pixel (0,0) black and (0,1) white in the first image.

    The int8 input scale comes from the calibration range; with both 0 and 255 present it is exactly
    255/255 = 1.0 with zero point -128, so every pixel value is represented without rounding.
    """
    out = images.astype(np.float32)
    out[0, 0, 0, :] = 0.0
    out[0, 0, 1, :] = 255.0
    return out
