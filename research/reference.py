"""Build the seed notebook's deployment model for timing: MobileNetV2 width 1.0 at 96x96 + the dropout head.

The model-zoo targets compare latency against this model exported to int8 by this project. Its weights
are random (this workplace has no width-1.0 ImageNet weights): latency does not depend on them, and its
accuracy is meaningless (about 10%).

    python -m research.reference runs/reference
    edgecifar export runs/reference/mnv2_w1.0_96_random.keras --int8 --out runs/reference/export
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "mnv2_w1.0_96_random"


def build(alpha: float = 1.0, size: int = 96):
    from edgecifar import models

    return models.create("mnv2_dropout", alpha=alpha, size=size, weights="none")


def main(argv: list[str] | None = None) -> Path:
    from edgecifar.fileio import atomic_path

    out = Path((argv or sys.argv[1:] or ["runs/reference"])[0])
    path = out / f"{NAME}.keras"
    with atomic_path(path) as tmp:
        build().save(tmp)
    print(path)
    return path


if __name__ == "__main__":  # pragma: no cover
    main()
