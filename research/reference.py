"""Build the timing-only models the zoo's latency is compared against, with random weights.

``mnv2_w1.0_96_random``: the seed notebook's deployment model (MobileNetV2 width 1.0 at 96x96 + the dropout head),
the reference every "x ref" figure divides by. ``resnet8_random``: the registry's ``resnet8`` (MLPerf Tiny's
image-classification network), the latency the tiny model must not exceed (issue 28). This workplace has no
width-1.0 ImageNet weights and the bench needs no accuracy from them: latency does not depend on weights, and their
accuracy is meaningless (about 10%).

    python -m research.reference runs/reference
    edgecifar export runs/reference/mnv2_w1.0_96_random.keras --int8 --out runs/reference/export
    edgecifar export runs/reference/resnet8_random.keras --int8 --out runs/reference/export
"""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "mnv2_w1.0_96_random"
RESNET8 = "resnet8_random"


def build(alpha: float = 1.0, size: int = 96):
    from edgecifar import models

    return models.create("mnv2_dropout", alpha=alpha, size=size, weights="none")


def build_resnet8():
    from edgecifar import models

    return models.create("resnet8")


def main(argv: list[str] | None = None) -> list[Path]:
    from edgecifar.fileio import atomic_path

    out = Path((argv or sys.argv[1:] or ["runs/reference"])[0])
    paths = []
    for name, make in ((NAME, build), (RESNET8, build_resnet8)):
        path = out / f"{name}.keras"
        with atomic_path(path) as tmp:
            make().save(tmp)
        print(path)
        paths.append(path)
    return paths


if __name__ == "__main__":  # pragma: no cover
    main()
