"""The images export uses: a validation set and a calibration set, both from the training images.

Training held out ``stratified_split(y_train, V, seed=0)`` for validation (V = the run's ``val_images``
from metrics.json, else train's default 5,000, or a fifth of the images when there are fewer than 25,000).
Export reproduces that split exactly, so that:

- validation = the first ``--val-size`` (2,000) images of a stratified subset (seed 0) of that held-out
  split: images the model never trained on, classes in proportion;
- calibration = ``--calibration`` (500) images of a stratified subset (seed 0) of the *other* training
  images, so quantization never sees the images it is judged on.

An image folder with a ``val/`` split names its validation images itself: validation comes from them and
calibration from the training images. Images are fitted to the model's input size and channels
(``Contract.fit``) once chosen. Neither touches the test set. Both are deterministic for a given data set and run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgecifar.data import Dataset, stratified_split, stratified_subset
from edgecifar.errors import DataError

TRAIN_DEFAULT_HOLDOUT = 5000   # train's --val-size default
HOLDOUT_SHARE = 5              # with fewer than 5 x 5,000 images, a fifth of them is held out
MIN_CALIBRATION = 10
DEFAULT_CALIBRATION = 500      # --calibration when not given: this many, or every image a small folder has
SEED = 0
SPLIT_HELD_OUT = "stratified validation split of the training images"
SPLIT_VAL = "the data's val/ images"


@dataclass(frozen=True)
class ExportData:
    """Validation images with labels (the data's), and calibration images (float32, with a 0 and a 255 pixel)."""

    x_val: np.ndarray
    y_val: np.ndarray
    calibration: np.ndarray
    holdout: int
    how: str = SPLIT_HELD_OUT     # where the validation images come from (the manifest says it)
    note: str | None = None       # what to say when the default calibration count was lowered to what the data has


def _count(asked: int | None, available: int, where: str) -> tuple[int, str | None]:
    """The calibration count: ``--calibration`` as asked (one line when the data is short of it), or by default
    :data:`DEFAULT_CALIBRATION`, lowered to what a small folder has (said)."""
    if asked is None:
        n = min(DEFAULT_CALIBRATION, available)
        return n, (f"calibration: {n} images, all {where} has outside validation (the default is "
                   f"{DEFAULT_CALIBRATION})" if n < DEFAULT_CALIBRATION else None)
    return asked, None


def split(ds: Dataset, val_size: int, n_calibration: int | None, holdout: int | None = None,
          fit: Callable[[np.ndarray], np.ndarray] | None = None) -> ExportData:
    """Choose the validation and calibration images, each fitted to the model's input by ``fit`` (default: as
    they are), or raise one DataError line saying what is short. ``n_calibration`` None: the default count, or
    fewer on a small folder."""
    fit = fit or (lambda images: images)
    n = len(ds.y_train)
    if len(ds.y_val):  # the data names its validation images: the calibration may use every training image
        n_calibration, note = _count(n_calibration, n, ds.source)
    else:
        cut = holdout or min(TRAIN_DEFAULT_HOLDOUT, n // HOLDOUT_SHARE)
        n_calibration, note = _count(n_calibration, n - cut, ds.source)
    if n_calibration < MIN_CALIBRATION:
        raise DataError(f"--calibration {n_calibration}: at least {MIN_CALIBRATION} images are needed")
    if len(ds.y_val):  # the data names its validation images: the calibration may use every training image
        if n < n_calibration:
            raise DataError(f"{ds.source}: calibration needs {n_calibration} images but only {n} training images "
                            "are there (lower --calibration)")
        val_idx = stratified_subset(ds.y_val, val_size, seed=SEED)
        cal_idx = stratified_subset(ds.y_train, n_calibration, seed=SEED)
        return ExportData(fit(ds.x_val[val_idx]), ds.y_val[val_idx], full_range(fit(ds.x_train[cal_idx])), 0,
                          SPLIT_VAL, note)
    holdout = holdout or min(TRAIN_DEFAULT_HOLDOUT, n // HOLDOUT_SHARE)
    if not 0 < holdout < n:
        raise DataError(f"{ds.source}: {n} training images, too few to hold out {holdout} for validation "
                        "as training did")
    train_idx, val_idx = stratified_split(ds.y_train, holdout, seed=SEED)
    if len(train_idx) < n_calibration:
        raise DataError(f"{ds.source}: calibration needs {n_calibration} images but only {len(train_idx)} "
                        f"training images lie outside the validation split (lower --calibration)")
    val_idx = val_idx[stratified_subset(ds.y_train[val_idx], val_size, seed=SEED)]
    cal_idx = train_idx[stratified_subset(ds.y_train[train_idx], n_calibration, seed=SEED)]
    return ExportData(fit(ds.x_train[val_idx]), ds.y_train[val_idx], full_range(fit(ds.x_train[cal_idx])), holdout,
                      note=note)


def full_range(images: np.ndarray) -> np.ndarray:
    """Float32 copy with pixel (0,0) black and (0,1) white in the first image.

    The int8 input scale comes from the calibration range; with both 0 and 255 present it is exactly
    255/255 = 1.0 with zero point -128, so every pixel value is represented without rounding.
    """
    out = images.astype(np.float32)
    out[0, 0, 0, :] = 0.0
    out[0, 0, 1, :] = 255.0
    return out
