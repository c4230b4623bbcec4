"""What every format writer receives: the Keras model, its name, the calibration images and the contract.

One small value object, so that the writers in ``tflite.py`` and ``onnx.py`` share one signature
``writer(job, dest)`` and the format table can call them without knowing which is which.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from edgecifar import INPUT_SHAPE, LABELS
from edgecifar.contract import Contract
from edgecifar.fdcapture import Captured

#: The input every exported file takes (the manifest and ONNX metadata repeat it).
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
PIXEL_RANGE = (0.0, 255.0)


class ExportFailure(Exception):
    """One format could not be written or did not meet its contract; the others go on."""


@dataclass
class ExportJob:
    """The inputs shared by every format of one ``edgecifar export`` call."""

    model: Any                                 # a keras.Model, float32, [N, H, W, C] pixels 0-255 -> [N, classes]
    name: str                                  # recipe or model file stem: the file name prefix
    calibration: np.ndarray                    # float32 [N, H, W, C] pixels 0-255, 0 and 255 both present
    labels: tuple[str, ...] = LABELS           # class names in output order; () numbers them
    cache: dict[str, Any] = field(default_factory=dict)  # results shared between formats (fp32 ONNX graph)
    shape: tuple[int, int, int] = INPUT_SHAPE  # (height, width, channels) of the input every file takes
    classes: int | None = None                 # outputs; None: as many as labels
    input_range: tuple[float, float] = PIXEL_RANGE  # what the files take for pixels 0 and 255 (always 0..255:
                                                    # a model that expects another range is wrapped, export/adapt.py)

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        if self.classes is None:
            self.classes = len(self.labels)
        if self.labels and len(self.labels) != self.classes:
            raise ValueError(f"{len(self.labels)} class names for {self.classes} outputs")

    def input_contract(self) -> dict[str, Any]:
        return {"name": INPUT_NAME, "shape": [-1, *self.shape], "layout": "NHWC", "range": list(self.input_range)}

    def contract(self) -> Contract:
        """What every file of this export takes and gives, embedded in each (edgecifar.contract)."""
        return Contract(*self.shape, layout="NHWC", input_range=tuple(self.input_range), labels=tuple(self.labels),
                        outputs="probabilities", source=self.name)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the converters' C++ and Python chatter (MLIR notes, "Saved artifact at", XNNPACK INFO).

    Redirects file descriptors 1 and 2, not just sys.stdout, because TFLite, tf2onnx and onnxruntime
    print from C++. Their errors still arrive as exceptions. ``EDGECIFAR_DEBUG=1`` shows everything.
    """
    if os.environ.get("EDGECIFAR_DEBUG"):
        yield
        return
    with Captured(1, 2), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
