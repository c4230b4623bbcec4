"""The Pareto front of accuracy against latency: the models no other model beats on both. Pure Python."""

from __future__ import annotations

import math
from typing import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when point ``a`` = (latency, accuracy) is at least as fast and as accurate as ``b``,
    and strictly better in one of the two."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points among (latency, accuracy) pairs, fastest first.

    Lower latency and higher accuracy are better. Points with a NaN/inf coordinate (a failed row)
    are never on the front. Of exact duplicates, only the first index is kept.
    """
    valid = [i for i, (lat, acc) in enumerate(points)
             if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lat, acc))]
    # Sort by latency ascending, then accuracy descending, then index: a sweep keeps each point that
    # is more accurate than every faster (or equally fast) one already kept.
    order = sorted(valid, key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best_acc = -math.inf
    for i in order:
        if points[i][1] > best_acc:
            front.append(i)
            best_acc = points[i][1]
    return front
