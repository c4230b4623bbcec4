"""TensorFlow Lite for Microcontrollers: does a ``.tflite`` file run on a microcontroller, and in how much RAM?

Uses TFLite Micro's own Python interpreter (PyPI ``tflite-micro``, the extra ``edgecifar[mcu]``): the same
reference kernels and arena allocator that firmware links, run on this CPU. For any TFLite file:

- which ops TFLite Micro lacks, every one named: the interpreter stops at the first missing op, so it is
  asked again with the ops found so far standing in as ADD (:func:`edgecifar.tflite_graph.lookup_model`);
- the smallest tensor arena that allocates, bisected to the byte on the interpreter itself, beside the
  interpreter's own "Arena allocation total" (``print_allocations``);
- flash = the file's size (the weights stay in flash; the arena holds activations and bookkeeping);
- which microcontroller classes have that much SRAM and flash (:data:`CHIPS`, figures from datasheets).

Neither the TFLite Micro library code, the stack nor the application is counted: a chip that "fits" has
that headroom left, no more. No latency is claimed: this CPU is not the chip.

TFLite Micro reports errors only as C++ prints on stdout, so each call runs with file descriptors 1 and 2
captured (:class:`edgecifar.fdcapture.Captured`); below ~500 bytes of arena the interpreter crashes (its own
allocator lives in the arena), so bisection never goes under :data:`ARENA_FLOOR`. Callers run this in a
process of its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgecifar import contract as contracts
from edgecifar import tflite_graph
from edgecifar.errors import MissingDependency, ModelError, one_line
from edgecifar.fdcapture import Captured
from edgecifar.runtime import Quant, Classifier, file_contract
from edgecifar.workers import PREFIX, error, run_module

MODULE = "tflite_micro.python.tflite_micro.runtime"
RUNTIME = "tflite-micro"
INSTALL = "pip install 'edgecifar[mcu]'"

#: What runs on a microcontroller: full-integer TensorFlow Lite files, int8 or 16x8 (int16 activations, int8
#: weights: TFLite Micro has int16 kernels for the common ops). One home for it: the mcu bench device refuses the
#: rest and export checks exactly these in TFLite Micro.
SUFFIXES = (".tflite",)
PRECISIONS = ("int8", "int16x8")

KiB, MiB = 1024, 1024 * 1024
ARENA_FLOOR = 1 * KiB        # measured here: arenas of 450 B and less crash TFLite Micro (SIGSEGV)
ARENA_START = 1 * MiB        # first try; doubled while the arena is what is short
ARENA_CAP = 64 * MiB         # larger than any microcontroller's RAM: report "more than" beyond it

_MISSING_RE = re.compile(r"Didn't find op for (?:builtin|custom) opcode '([^']+)'")
_ARENA_RE = re.compile(r"missing: \d+|Failed to (?:allocate|resize)|[Aa]rena size is too small")
_TOTAL_RE = re.compile(r"Arena allocation total (\d+) bytes")
_INVOKE_RE = re.compile(r"Node (\w+) \(number (\d+)\) failed to invoke")
_TYPE_RE = re.compile(r"\btype is (\d+)")
#: TfLiteType codes TFLite Micro's kernels print in their type errors (tensorflow/lite/core/c/c_api_types.h).
TFLITE_TYPES = {1: "float32", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8", 10: "float16"}


@dataclass(frozen=True)
class Chip:
    """A microcontroller class: on-chip SRAM and the flash a typical board gives it, with their source."""

    name: str
    core: str
    sram: int
    flash: int
    source: str


#: Common microcontroller classes, smallest first. SRAM is the datasheet's total (not always contiguous, and
#: shared with the stack and the application; on the ESP32-S3 with Wi-Fi too).
CHIPS: tuple[Chip, ...] = (
    Chip("STM32L432KC", "Cortex-M4F, 80 MHz", 64 * KiB, 256 * KiB,
         "ST DS11451, STM32L432KB/KC datasheet: 64 KB SRAM, 256 KB flash"),
    Chip("nRF52840", "Cortex-M4F, 64 MHz", 256 * KiB, 1 * MiB,
         "Nordic nRF52840 Product Specification v1.7: 256 KB RAM, 1 MB flash"),
    Chip("STM32F412ZG", "Cortex-M4F, 100 MHz", 256 * KiB, 1 * MiB,
         "ST DS11139, STM32F412xE/xG datasheet: 256 KB SRAM, 1 MB flash"),
    Chip("RP2040 (Pico)", "Cortex-M0+, 133 MHz", 264 * KiB, 2 * MiB,
         "Raspberry Pi RP2040 datasheet: 264 KB SRAM; Raspberry Pi Pico datasheet: 2 MB QSPI flash"),
    Chip("STM32F767ZI", "Cortex-M7, 216 MHz", 512 * KiB, 2 * MiB,
         "ST DS11532, STM32F765xx/767xx datasheet: 512 KB SRAM, 2 MB flash"),
    Chip("ESP32-S3 (N8)", "Xtensa LX7, 240 MHz", 512 * KiB, 8 * MiB,
         "Espressif ESP32-S3 Series Datasheet: 512 KB SRAM; ESP32-S3-WROOM-1 datasheet: N8 = 8 MB flash"),
)


def fits(arena: int | None, flash: int | None, chips: tuple[Chip, ...] = CHIPS) -> list[str]:
    """Names of the chips with at least ``arena`` bytes of SRAM and ``flash`` bytes of flash."""
    if arena is None or flash is None:
        return []
    return [c.name for c in chips if arena <= c.sram and flash <= c.flash]


def runs_format(suffix: str, precision: str | None) -> bool:
    """Whether files of this suffix and precision are the kind a microcontroller runs (:data:`SUFFIXES`,
    :data:`PRECISIONS`): the formats export checks in TFLite Micro."""
    return suffix.lower() in SUFFIXES and precision in PRECISIONS


def installed() -> bool:
    try:
        return importlib.util.find_spec("tflite_micro") is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as none
        return False


def _runtime():
    try:
        return importlib.import_module(MODULE)
    except ImportError:
        raise MissingDependency(f"TFLite Micro is not installed ({INSTALL})") from None


# --------------------------------------------------------------------------- C++ prints, captured

def _quietly(call: Callable[[], object]) -> tuple[object | None, str]:
    """(result, printed text); result is None when the call raised TFLite Micro's RuntimeError."""
    with Captured(1, 2) as printed:
        try:
            result = call()
        except RuntimeError:
            result = None
    return result, printed.text


def _interpreter(data: bytes, arena: int):
    module = _runtime()
    return _quietly(lambda: module.Interpreter.from_bytes(data, arena_size=int(arena)))


def _first_line(text: str, default: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else default


# --------------------------------------------------------------------------- the check

@dataclass
class MicroCheck:
    """What TFLite Micro makes of one file. ``arena`` is the smallest that allocates (bytes)."""

    file: str
    flash: int
    ops: dict[str, int]
    macs: int
    full_integer: bool
    unsupported: list[str] = field(default_factory=list)
    arena: int | None = None
    arena_recorded: int | None = None
    error: str | None = None

    @property
    def runs(self) -> bool:
        return self.arena is not None and not self.unsupported and self.error is None

    @property
    def fits(self) -> list[str]:
        return fits(self.arena, self.flash) if self.runs else []

    def summary(self) -> str:
        """One line: the arena it runs in, or what stops it."""
        if self.unsupported:
            return f"TFLite Micro lacks {', '.join(f'{op} (x{self.ops.get(op, 0)})' for op in self.unsupported)}"
        if self.error:
            return self.error
        return f"runs in TFLite Micro, arena {self.arena:,} B"

    def to_dict(self) -> dict:
        return {**asdict(self), "runs": self.runs, "fits": self.fits, "summary": self.summary()}


def check(path: str | Path) -> MicroCheck:
    """Ops, smallest arena and flash of ``path`` under TFLite Micro (MissingDependency when not installed)."""
    path = Path(path)
    graph = tflite_graph.read(path)
    data = path.read_bytes()
    result = MicroCheck(str(path), len(data), dict(graph.ops), graph.macs, graph.full_integer)
    if not graph.full_integer:
        result.error = (f"not full-integer: {graph.float_part()} (a microcontroller runs int8 ops: export with --int8, "
                        "no --int8-float-ops)")
        return result
    arena = ARENA_START
    while True:
        interpreter, text = _interpreter(data, arena)
        if interpreter is not None:
            break
        if _MISSING_RE.search(text):
            result.unsupported = missing_ops(data, graph)
            return result
        if not _ARENA_RE.search(text):
            result.error = f"TFLite Micro: {_first_line(text, 'failed to allocate tensors')}"
            return result
        if arena >= ARENA_CAP:
            result.error = f"TFLite Micro needs an arena of more than {ARENA_CAP // MiB} MiB"
            return result
        arena *= 2
    result.arena = smallest_arena(data, arena)
    interpreter, _ = _interpreter(data, result.arena)
    result.arena_recorded = recorded_total(interpreter)
    result.error = invoke_failure(interpreter)
    return result


def invoke_failure(interpreter) -> str | None:
    """Why one invoke on a blank image fails, in one line, or None when it runs. Some kernels check their types only
    when invoked, not when the arena is allocated (RESIZE_BILINEAR refuses int16): allocating is not running."""
    try:
        detail = interpreter.get_input_details(0)
        interpreter.set_input(np.zeros([max(int(d), 1) for d in detail["shape"]], detail["dtype"]), 0)
    except (ValueError, RuntimeError, IndexError, KeyError, TypeError) as exc:
        return f"TFLite Micro allocates it but cannot take an image: {one_line(exc)}"

    def invoke() -> tuple[bool, str]:
        try:
            status = interpreter.invoke()
        except RuntimeError as exc:
            return False, str(exc)
        return status in (0, None), f"invoke returned status {status}"

    (ran, said), text = _quietly(invoke)
    if ran:
        return None
    text = text or said
    node = _INVOKE_RE.search(text)
    reasons = [ln.strip() for ln in text.splitlines() if ln.strip() and not _INVOKE_RE.search(ln)]
    reason = _TYPE_RE.sub(lambda m: f"type is {TFLITE_TYPES.get(int(m.group(1)), m.group(1))}",
                          reasons[0] if reasons else "invoke failed")
    where = f"{node.group(1)} (node {node.group(2)})" if node else "a kernel"
    return f"TFLite Micro allocates it but cannot run it: {where} fails: {reason}"


def allocates(data: bytes, arena: int) -> bool:
    """Whether TFLite Micro allocates the model in an arena of ``arena`` bytes (>= ARENA_FLOOR)."""
    if arena < ARENA_FLOOR:
        raise ValueError(f"arena {arena} B: below {ARENA_FLOOR} B TFLite Micro crashes instead of refusing")
    return _interpreter(data, arena)[0] is not None


def smallest_arena(data: bytes, works: int) -> int:
    """The smallest arena size (bytes) that allocates, given one that does; never below ARENA_FLOOR."""
    if allocates(data, ARENA_FLOOR):
        return ARENA_FLOOR
    low, high = ARENA_FLOOR, works  # low fails, high allocates
    while high - low > 1:
        mid = (low + high) // 2
        if allocates(data, mid):
            high = mid
        else:
            low = mid
    return high


def recorded_total(interpreter) -> int | None:
    """The interpreter's own "Arena allocation total N bytes" (print_allocations, from C++)."""
    if interpreter is None:
        return None
    _, text = _quietly(interpreter.print_allocations)
    m = _TOTAL_RE.search(text)
    return int(m.group(1)) if m else None


def missing_ops(data: bytes, graph: tflite_graph.Graph) -> list[str]:
    """Every op of the file that TFLite Micro has no kernel for, in TFLite Micro's own words.

    The interpreter names only the first op it lacks, so it is asked again on a lookup model
    (:func:`edgecifar.tflite_graph.lookup_model`) where the ops found so far stand in as ADD, until it
    reaches the sentinel op at the end: no kernel is ever prepared on the edited model.
    """
    missing: list[str] = []
    for _ in range(len(graph.ops) + 1):
        probe = tflite_graph.lookup_model(data, set(missing))
        _, text = _interpreter(probe, ARENA_START + 4 * len(probe))
        found = [name for name in _MISSING_RE.findall(text) if name != tflite_graph.SENTINEL]
        if not found or found[0] in missing:
            break
        missing.append(found[0])
    return missing


# --------------------------------------------------------------------------- the check in a process of its own

def figures(c: MicroCheck) -> dict:
    """The check's figures as result fields (the mcu bench rows' own columns, export's micro column)."""
    return {"arena_bytes": c.arena, "arena_recorded_bytes": c.arena_recorded, "flash_bytes": c.flash,
            "macs": c.macs, "ops": c.ops, "unsupported_ops": c.unsupported, "micro": c.summary(),
            "fits": c.fits}


def check_in_process(path: Path, timeout: float = 300.0, python: str | None = None) -> dict:
    """:func:`check` of ``path`` in a fresh process (TFLite Micro can crash on a hostile or odd file), as
    ``{"status", "error"?, "figures"}``: what export and the mcu bench device ask before running a file."""
    result = run_module(python or sys.executable, __name__, ["--", str(path)], timeout)
    return crash_named(result, path)


def crash_named(result: dict, path: Path) -> dict:
    """TFLite Micro aborts on some files (a CHECK in a kernel's Prepare, e.g. a softmax whose input scale is
    ~1e-9) where LiteRT runs them: say so instead of "worker crashed"."""
    m = re.fullmatch(r"worker crashed \((.+)\)", result.get("error") or "")
    if m:
        result["error"] = f"{path}: TFLite Micro crashed ({m.group(1)}) preparing or running this file"
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m edgecifar.micro -- FILE``: the check, printed as one result line; never a traceback."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m edgecifar.micro", description=check.__doc__.split("(")[0])
    parser.add_argument("file")
    path = Path(parser.parse_args(argv).file)
    try:
        c = check(path)
        result = {"status": "ok", "figures": figures(c)} if c.runs else \
            error(f"{path}: {c.summary()}", figures=figures(c))
    except Exception as exc:  # one line for the caller, never a traceback
        result = error(one_line(exc, limit=None))
    sys.stdout.write(PREFIX + json.dumps(result, allow_nan=True) + "\n")
    sys.stdout.flush()
    return 0 if result["status"] == "ok" else 1


# --------------------------------------------------------------------------- running it

class MicroModel(Classifier):
    """A file in TFLite Micro's interpreter: pixels at its input size in, probabilities out, one image per invoke
    (the interpreter's batch is the file's, 1). Its contract is read as the runtime reads any file's."""

    runtime = RUNTIME

    def __init__(self, path: str | Path, arena: int):
        self.path = Path(path)
        data = self.path.read_bytes()
        self.interpreter, text = _interpreter(data, arena)
        if self.interpreter is None:
            raise ModelError(f"{self.path}: TFLite Micro: {_first_line(text, 'failed to allocate tensors')}")
        inp, out = self.interpreter.get_input_details(0), self.interpreter.get_output_details(0)
        self.input_quant, self.output_quant = _quant(inp), _quant(out)
        self.contract = file_contract(self.path, [int(d) for d in inp["shape"]], self.input_quant,
                                      tflite_graph.metadata(data, contracts.METADATA_NAME))
        self.classes = int(np.prod(out["shape"][1:]))

    def predict(self, images: np.ndarray) -> np.ndarray:
        outs = []
        for image in self.check_images(images):
            self.interpreter.set_input(self.input_tensor(image[None]), 0)
            self.interpreter.invoke()
            outs.append(self.probabilities(np.asarray(self.interpreter.get_output(0)).reshape(1, -1)))
        return np.concatenate(outs) if outs else self.empty()


def _quant(detail: dict) -> Quant:
    q = detail.get("quantization_parameters") or {}
    scales, zero_points = list(q.get("scales", [])), list(q.get("zero_points", []))
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f" or not scales:
        return Quant(0.0, 0, dtype)
    return Quant(float(scales[0]), int(zero_points[0]), dtype)


if __name__ == "__main__":
    sys.exit(main())
