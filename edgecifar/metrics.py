"""Pure numpy maths for classification results: accuracy with its interval, agreement, confusion."""

from __future__ import annotations

import math

import numpy as np

from edgecifar import NUM_CLASSES


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``scores`` [N, C] against integer ``labels`` [N]."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion: honest at small counts and near 0 or 1."""
    if total <= 0:
        return (float("nan"), float("nan"))
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows where two score arrays pick the same class."""
    return float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if len(a) else 0.0


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, n_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts [true, predicted]."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(labels), np.asarray(predicted)), 1)
    return m


def most_confused(matrix: np.ndarray, names: tuple[str, ...], k: int = 5) -> list[tuple[str, str, int]]:
    """The ``k`` unordered class pairs most often mistaken for each other, with their count."""
    sym = matrix + matrix.T
    pairs = [(int(sym[i, j]), names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(a, b, n) for n, a, b in pairs[:k] if n > 0]
