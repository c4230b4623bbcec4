"""The data an export calibrates and validates on, and the class names its files carry.

``--data`` is CIFAR-10 (the default), a folder of class folders (:mod:`edgecifar.folders`), or a folder of loose
images (no labels: calibration, and validation by agreement with Keras), read at the model's input size. The class
names come from, in this order: ``--labels FILE``, the run's own (metrics.json), the data folder's class folders when
there are as many as the model has outputs, CIFAR-10's for a 10-class model on CIFAR-10, else none (numbered).
A file is validated against the data's labels when the data's classes are the model's (by name, any order);
otherwise by top-1 agreement with the Keras model, said in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgecifar import LABELS, NUM_CLASSES
from edgecifar import data as datasets
from edgecifar import folders
from edgecifar.data import Cifar10, Dataset
from edgecifar.errors import EdgeCifarError


def load(path: str | None, size: tuple[int, int], say: Callable[[str], None]) -> Dataset:
    """``--data`` (None: the usual places) at ``size`` (height, width): a folder without class folders is read as
    loose, unlabelled images (said)."""
    try:
        return datasets.load(path, size=size)
    except folders.NoClassFolders:
        where = datasets.locate(path)
        say(f"{where}: no class folders: its images calibrate, and each file is validated by top-1 agreement with "
            "the Keras model")
        return folders.load(where, size, unlabelled=True)


def is_labelled(ds: Dataset) -> bool:
    return tuple(ds.label_names) != (folders.UNLABELLED,)


def choose_labels(given: tuple[str, ...] | None, run_labels: tuple[str, ...] | None, classes: int,
                  ds: Dataset) -> tuple[tuple[str, ...], str]:
    """(the class names every file carries, in output order, () for numbered; where they came from)."""
    if given is not None:
        if len(given) != classes:
            raise EdgeCifarError(f"--labels: {len(given)} class names for the model's {classes} outputs (one name "
                                 "per line, in output order)")
        return tuple(given), "--labels"
    if run_labels is not None and len(run_labels) == classes:
        return run_labels, "the run's metrics.json"
    if isinstance(ds, Cifar10):
        return (LABELS, "CIFAR-10") if classes == NUM_CLASSES else ((), "numbered")
    if is_labelled(ds) and len(ds.label_names) == classes:
        return tuple(ds.label_names), "the data's class folders"
    return (), "numbered"


def _key(name: str) -> str:
    return name.strip().casefold()


@dataclass(frozen=True)
class Targets:
    """How the validation images are scored: ``to_model`` maps the data's label i to the model's output
    ``to_model[i]`` (None: no labels that name the model's classes, so agreement with Keras), and why."""

    to_model: np.ndarray | None
    note: str | None = None

    def labels(self, y: np.ndarray) -> np.ndarray | None:
        return None if self.to_model is None else self.to_model[np.asarray(y)]


def targets(labels: tuple[str, ...], ds: Dataset, where: str) -> Targets:
    """Whether the data's classes are the model's ``labels`` (the same names, case-insensitive, any order)."""
    data_names = tuple(ds.label_names)
    if not is_labelled(ds):
        return Targets(None)  # the load said so
    if labels and {_key(n) for n in labels} == {_key(n) for n in data_names} and len(set(map(_key, labels))) == len(labels):
        index = {_key(n): i for i, n in enumerate(labels)}
        return Targets(np.array([index[_key(n)] for n in data_names], np.int64))
    shown = ", ".join(data_names[:5]) + (", ..." if len(data_names) > 5 else "")
    model = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "") if labels else "numbered"
    return Targets(None, f"{where}: the data's classes ({shown}) are not the model's ({model}): each file is validated "
                         "by top-1 agreement with the Keras model, not accuracy")
