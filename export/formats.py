"""The one table of export formats (as Ultralytics' ``export_formats()``): everything else reads it.

The CLI builds its flags from it, the command loops over it, the manifest takes precision and runtime
from it. Adding a format means adding a row here and a writer function; there is no if/elif over formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgecifar.export import onnx, tflite
from edgecifar.export.job import ExportJob

PRECISIONS = ("fp32", "fp16", "dynamic", "int8")
RUNTIMES = {".tflite": "litert", ".onnx": "onnxruntime"}  # must match edgecifar.runtime.LOADERS


@dataclass(frozen=True)
class Format:
    """One kind of exported file."""

    key: str                                   # click parameter name and --FLAG
    title: str                                 # shown in the results table
    suffix: str                                # file suffix; chooses the runtime
    precision: str
    calibrated: bool                           # needs the calibration images
    write: Callable[[ExportJob, Path], None]   # writes the file to the (temporary) path it is given
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def format(self) -> str:
        return self.suffix.lstrip(".")

    @property
    def runtime(self) -> str:
        return RUNTIMES[self.suffix]

    def filename(self, name: str) -> str:
        return f"{name}_{self.precision}{self.suffix}"


FORMATS: tuple[Format, ...] = (
    Format("fp32", "TFLite fp32", ".tflite", "fp32", False, tflite.write_fp32,
           "TFLite float32 (the default when no format is given)."),
    Format("fp16", "TFLite fp16", ".tflite", "fp16", False, tflite.write_fp16, "TFLite with float16 weights."),
    Format("dynamic", "TFLite dynamic", ".tflite", "dynamic", False, tflite.write_dynamic,
           "TFLite with int8 weights, float activations (dynamic range)."),
    Format("int8", "TFLite int8", ".tflite", "int8", True, tflite.write_int8,
           "Full-integer TFLite: int8 ops, int8 input (scale 1, zero point -128) and output."),
    Format("onnx", "ONNX fp32", ".onnx", "fp32", False, onnx.write_fp32, f"ONNX float32 (opset {onnx.OPSET})."),
    Format("onnx_int8", "ONNX int8", ".onnx", "int8", True, onnx.write_int8,
           "ONNX static QDQ int8, per-channel, on the calibration images."),
)

DEFAULT = "fp32"


def check_table(formats: tuple[Format, ...] = FORMATS) -> None:
    """The table's invariants, checked at import: unique keys and file names, known precisions and runtimes."""
    keys = [f.key for f in formats]
    names = [f.filename("m") for f in formats]
    if len(set(keys)) != len(keys) or len(set(names)) != len(names):
        raise ValueError(f"export formats: duplicate key or file name in {keys}")
    for f in formats:
        if f.precision not in PRECISIONS or f.suffix not in RUNTIMES or not callable(f.write):
            raise ValueError(f"export format {f.key}: bad precision, suffix or writer")
    if DEFAULT not in keys:
        raise ValueError(f"export formats: default {DEFAULT!r} missing")


def by_key(key: str) -> Format:
    return next(f for f in FORMATS if f.key == key)


def select(chosen: dict[str, bool], everything: bool = False) -> list[Format]:
    """The formats whose flag was given, in table order; all with ``--all``; fp32 when none was."""
    picked = [f for f in FORMATS if everything or chosen.get(f.key)]
    return picked or [by_key(DEFAULT)]


check_table()
