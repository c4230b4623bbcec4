"""How every command writes numbers for people: one convention, in one place.

- **Sizes are binary, with IEC symbols**: 1 KiB = 1,024 bytes, 1 MiB = 1,048,576 bytes, for files and memory
  alike. Every memory figure we read is binary already (the kernel's VmHWM, ``benchmark_model``'s "MB",
  TensorFlow Lite Micro's arena, a microcontroller's SRAM and flash), so nothing is converted, and the
  symbol cannot be misread as 1,000. Exact byte counts are written as ``98,176 B``.
  (``peak_rss_mb`` in bench JSON keeps its historical name; its value is MiB.)
- **Accuracy is a percentage** in human output (tables, progress lines); a difference of two accuracies
  is in points. Files for programs (JSON, CSV, metrics.json) keep fractions 0-1.
- **Counts** carry thousands separators and the right plural: "1 epoch", "2,000 test images".

No TensorFlow and nothing heavy here: devices import it.
"""

from __future__ import annotations

import math

KIB = 1024
MIB = 1024 ** 2


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def size(nbytes, empty: str = "–") -> str:
    """``812 B``, ``93.4 KiB``, ``1.92 MiB``."""
    if not _finite(nbytes):
        return empty
    if nbytes >= MIB:
        return f"{nbytes / MIB:.2f} MiB"
    if nbytes >= KIB:
        return f"{nbytes / KIB:.1f} KiB"
    return f"{nbytes:.0f} B"


def percent(fraction, digits: int = 1, empty: str = "–") -> str:
    """An accuracy (a fraction 0-1) as ``54.5%``."""
    return f"{100 * fraction:.{digits}f}%" if _finite(fraction) else empty


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``, ``2,000 images`` (``nouns`` for irregular plurals)."""
    return f"{n:,} {noun if n == 1 else (nouns or noun + 's')}"
