"""Latency statistics that stay honest on a noisy, shared machine. Pure numpy, no runtime needed.

Timings are taken in consecutive *blocks*; the reported latency is the median of the block medians
and the *spread* is the range (min-max) of those block medians. A burst of work from a neighbour
spoils one block, moves the spread, and barely moves the headline number. Percentiles (p90, p99)
come from all samples pooled, because tails are what they measure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return float("nan")
    return float(np.percentile(arr, q))


def block_count(runs: int, blocks: int) -> int:
    """How many blocks ``runs`` timings are split into when ``blocks`` are asked for: never more than runs."""
    return min(blocks, runs)


def split_blocks(values: Sequence[float], blocks: int) -> list[np.ndarray]:
    """Split ``values`` in order into :func:`block_count` consecutive, near-equal blocks."""
    if blocks < 1:
        raise ValueError(f"blocks must be >= 1, got {blocks}")
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return []
    return [b for b in np.array_split(arr, block_count(arr.size, blocks)) if b.size]


def block_medians(values: Sequence[float], blocks: int) -> list[float]:
    """The median of each consecutive block of ``values`` (see :func:`split_blocks`)."""
    return [float(np.median(b)) for b in split_blocks(values, blocks)]


@dataclass(frozen=True)
class LatencyStats:
    """Summary of per-run latencies, in milliseconds."""

    runs: int
    blocks: int
    median_ms: float        # median of the block medians: the headline number
    p90_ms: float           # pooled over all runs
    p99_ms: float
    mean_ms: float
    min_ms: float
    spread_lo_ms: float     # smallest block median
    spread_hi_ms: float     # largest block median
    iqr_ms: float           # pooled inter-quartile range

    @property
    def spread_pct(self) -> float:
        """Width of the block-median range relative to the headline median, in percent."""
        if not self.median_ms or math.isnan(self.median_ms):
            return float("nan")
        return 100.0 * (self.spread_hi_ms - self.spread_lo_ms) / self.median_ms

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(samples_s: Sequence[float], blocks: int = 5) -> LatencyStats:
    """Summarize per-run latencies given in **seconds**; NaN everywhere when there are none."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        nan = float("nan")
        return LatencyStats(0, 0, nan, nan, nan, nan, nan, nan, nan, nan)
    meds = block_medians(ms, blocks)
    return LatencyStats(
        runs=int(ms.size),
        blocks=len(meds),
        median_ms=float(np.median(meds)),
        p90_ms=percentile(ms, 90),
        p99_ms=percentile(ms, 99),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        spread_lo_ms=float(min(meds)),
        spread_hi_ms=float(max(meds)),
        iqr_ms=percentile(ms, 75) - percentile(ms, 25),
    )


def throughput(images_per_call: int, call_seconds: Sequence[float], blocks: int = 5) -> float:
    """Images per second from the timed calls of a batch: batch size over the median-of-blocks time."""
    meds = block_medians(call_seconds, blocks)
    if not meds:
        return float("nan")
    per_call = float(np.median(meds))
    return images_per_call / per_call if per_call > 0 else float("inf")
