"""Interleaved rounds (``edgecifar bench --rounds N``) and latency as a fraction of a reference file.

On a shared machine the speed drifts by 10-15% between minutes, so two files measured minutes apart
are not compared on the same machine. Measuring the whole list N times, round-robin (round 1: every
file; round 2: every file; ...), spreads the drift over every file alike. A file's latency is then
the median of its round medians, and its latency as a fraction of the reference is the median of its
per-round ratios (same round, same thread count): a ratio of two measurements taken a minute apart,
not of two figures that may come from a fast and a slow stretch. Pure numpy, no runtime needed.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

K = TypeVar("K")


def round_robin(keys: Sequence[K], rounds: int) -> list[tuple[int, K]]:
    """``(round, key)`` in measuring order: every key in round 1, then every key in round 2, ... (1-based)."""
    return [(r, k) for r in range(1, rounds + 1) for k in keys]


def over_rounds(medians: Sequence[float]) -> dict[str, float]:
    """A row's latency from its round medians: their median, and their min-max as the spread."""
    arr = np.asarray(medians, dtype=np.float64)
    return {"latency_ms": float(np.median(arr)), "spread_lo_ms": float(arr.min()), "spread_hi_ms": float(arr.max())}


def vs_reference(medians: Sequence[float], reference: Sequence[float]) -> float:
    """The median over rounds of ``medians[r] / reference[r]``: each ratio from one round, so drift between
    rounds cancels. NaN when a round is missing on either side or a reference median is not positive."""
    own, ref = np.asarray(medians, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if own.size == 0 or own.shape != ref.shape or not np.all(ref > 0):
        return float("nan")
    return float(np.median(own / ref))
