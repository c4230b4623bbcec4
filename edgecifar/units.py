"""How every command writes numbers for people: one convention, in one place.

- **Sizes are SI**: 1 kB = 1,000 bytes, 1 MB = 1,000,000 bytes (as ``ls --si`` and file managers count;
  the zoo's "100 kB" and "5 MB" budgets mean exactly that). Memory too: the kernel counts resident
  memory in KiB, so a peak of 52 MiB is written 54.5 MB.
- **Accuracy is a percentage** in human output (tables, progress lines); a difference of two accuracies
  is in points. Files for programs (JSON, CSV, metrics.json) keep fractions 0-1.
- **Counts** carry thousands separators and the right plural: "1 epoch", "2,000 test images".

No TensorFlow and nothing heavy here: devices import it.
"""

from __future__ import annotations

import math

KB = 1000
MB = 1000 ** 2
MIB = 1024 ** 2  # what /proc and benchmark_model measure memory in


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def size(nbytes, empty: str = "–") -> str:
    """``812 B``, ``95.7 kB``, ``2.02 MB`` (SI: kB = 1,000 bytes)."""
    if not _finite(nbytes):
        return empty
    if nbytes >= MB:
        return f"{nbytes / MB:.2f} MB"
    if nbytes >= KB:
        return f"{nbytes / KB:.1f} kB"
    return f"{nbytes:.0f} B"


def mib_to_mb(mib):
    """A memory figure measured in MiB (VmHWM, benchmark_model) in MB (10^6 bytes); non-numbers pass through."""
    return mib * MIB / MB if _finite(mib) else mib


def percent(fraction, digits: int = 1, empty: str = "–") -> str:
    """An accuracy (a fraction 0-1) as ``54.5%``."""
    return f"{100 * fraction:.{digits}f}%" if _finite(fraction) else empty


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``, ``2,000 images`` (``nouns`` for irregular plurals)."""
    return f"{n:,} {noun if n == 1 else (nouns or noun + 's')}"
