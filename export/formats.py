"""The one table of export formats (as Ultralytics' ``export_formats()``): everything else reads it.

The CLI builds its flags from it, the command loops over it, the manifest takes precision and runtime
from it. Adding a format means adding a row here and a writer function; there is no if/elif over formats.
A format's settings are its ``options``: each becomes a --FORMAT-NAME flag, a keyword of its writer and a
key of the file's ``options`` in edgecifar.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgecifar.export import onnx, tflite

PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "int16x8", "mixed_int8")
RUNTIMES = {".tflite": "litert", ".onnx": "onnxruntime"}  # must match edgecifar.runtime.LOADERS


@dataclass(frozen=True)
class Option:
    """One setting of one format: ``--FORMAT-NAME`` on the command line, ``name=`` to its writer."""

    name: str                                  # the writer's keyword and the key in the manifest's "options"
    type: type
    default: Any                               # the default writes the same file as before the option existed
    help: str
    min: int | None = None                     # the smallest value accepted (None: any)


@dataclass(frozen=True)
class Format:
    """One kind of exported file."""

    key: str                                   # click parameter name and --FLAG
    title: str                                 # shown in the results table
    suffix: str                                # file suffix; chooses the runtime
    precision: str
    calibrated: bool                           # needs the calibration images
    write: Callable[..., None]                 # write(job, path, **options): the file, at the (temporary) path
    help: str
    options: tuple[Option, ...] = ()

    def option_flag(self, option: Option) -> str:
        return f"{self.flag}-{option.name.replace('_', '-')}"

    def option_key(self, option: Option) -> str:
        """The click parameter name of ``option``."""
        return f"{self.key}_{option.name}"

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
           "Full-integer TFLite: int8 ops, int8 input (scale 1, zero point -128) and output.",
           options=(Option("float_ops", int, 0,
                           "Keep the first N operators (graph order) in float32; the input and output stay int8. "
                           "For a net that amplifies early rounding error (mnv2_ft96: 13 = the stem up to "
                           "block_2_add; figures in research/README.md, MobileNetV2 fine-tuning). Not for TFLite Micro.",
                           min=0),)),
    Format("int16x8", "TFLite 16x8", ".tflite", "int16x8", True, tflite.write_int16x8,
           "TFLite with int16 activations and int8 weights (16x8): int16 input (zero point 0) and output. More "
           "accurate than int8 where activations need the range; slower on CPUs (no XNNPACK kernels)."),
    Format("onnx", "ONNX fp32", ".onnx", "fp32", False, onnx.write_fp32, f"ONNX float32 (opset {onnx.OPSET})."),
    Format("onnx_int8", "ONNX int8", ".onnx", "int8", True, onnx.write_int8,
           "ONNX static QDQ int8, per-channel, on the calibration images."),
)

#: Written by export's quantization doctor, not by a flag: full int8 with the layers ``--max-drop`` chose kept in
#: float32 (their output tensor and the operators that compute and read it), int8 input and output.
MIXED = Format("mixed_int8", "TFLite mixed int8", ".tflite", "mixed_int8", True, tflite.write_mixed_int8,
               "Full int8 but for the layers --max-drop keeps in float32 (export/doctor.py).")
DERIVED: tuple[Format, ...] = (MIXED,)

DEFAULT = "fp32"


def check_table(formats: tuple[Format, ...] = FORMATS, derived: tuple[Format, ...] = DERIVED) -> None:
    """The table's invariants, checked at import: unique keys and file names (derived formats' too), known
    precisions and runtimes."""
    keys = [f.key for f in formats + derived]
    names = [f.filename("m") for f in formats + derived]
    if len(set(keys)) != len(keys) or len(set(names)) != len(names):
        raise ValueError(f"export formats: duplicate key or file name in {keys}")
    for f in formats + derived:
        if f.precision not in PRECISIONS or f.suffix not in RUNTIMES or not callable(f.write):
            raise ValueError(f"export format {f.key}: bad precision, suffix or writer")
    flags = [f.flag for f in formats] + [f.option_flag(o) for f in formats for o in f.options]
    if len(set(flags)) != len(flags):
        raise ValueError(f"export formats: duplicate flag in {flags}")
    for f in formats:
        for o in f.options:
            if not isinstance(o.default, o.type):
                raise ValueError(f"export format {f.key}: option {o.name} default {o.default!r} is not {o.type.__name__}")
            if o.min is not None and o.default < o.min:
                raise ValueError(f"export format {f.key}: option {o.name} default {o.default!r} is below its min {o.min}")
    if DEFAULT not in keys:
        raise ValueError(f"export formats: default {DEFAULT!r} missing")


def by_key(key: str) -> Format:
    return next(f for f in FORMATS if f.key == key)


def select(chosen: dict[str, bool], everything: bool = False) -> list[Format]:
    """The formats whose flag was given, in table order; all with ``--all``; fp32 when none was."""
    picked = [f for f in FORMATS if everything or chosen.get(f.key)]
    return picked or [by_key(DEFAULT)]


check_table()
