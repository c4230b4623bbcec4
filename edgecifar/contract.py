"""The contract of a classifier file: what it takes and what it gives, read the same way by every stage.

A file's contract is its input size (height, width, 1 or 3 channels, NHWC or NCHW), the values the graph expects
for pixels 0..255 (``input_range``: 0..255 for ours, 0..1 or -1..1 for most published models), its class names,
whether its outputs are probabilities or logits, and where it came from. Export writes it into every file (TFLite:
a metadata buffer named :data:`METADATA_NAME`; ONNX: a ``metadata_props`` entry of that name) and into
``edgecifar.json``; bench, predict and ``--device mcu`` read it back without TensorFlow.

A file without one (anyone's ``.tflite``/``.onnx``) still runs: the shape comes from the file, an integer input's
range from its quantization (a file made by the standard converter recipe with inputs 0..1 says scale 1/255), the
classes are numbered (``--labels FILE`` names them) and outputs that are not probabilities are found and put
through a softmax. What cannot be known (the range of a float input) is asked for (``--input-range``), never
guessed: a wrong range gives a confident wrong accuracy, not an error.

Embedded contracts are untrusted data like the file around them: parsed as JSON, checked field by field, and a
bad one is one :class:`~edgecifar.errors.ModelError` line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecifar.errors import EdgeCifarError, ModelError

#: The TFLite metadata entry and ONNX metadata_props key that carry a file's contract (JSON).
METADATA_NAME = "edgecifar.contract"
VERSION = 1
LAYOUTS = ("NHWC", "NCHW")
OUTPUTS = ("probabilities", "logits")
#: Pixel ranges published models expect, to which an integer input's quantization domain is snapped when it lies
#: within :data:`SNAP_STEPS` quantization steps of one (a converter's calibration rarely hits a range exactly).
COMMON_RANGES: tuple[tuple[float, float], ...] = ((0.0, 255.0), (0.0, 1.0), (-1.0, 1.0), (-128.0, 127.0))
SNAP_STEPS = 2.0
MAX_SIDE = 4096          # an input side beyond this is refused: no edge classifier takes it, memory would
MAX_CLASSES = 100_000
MAX_LABEL = 200          # characters per class name


@dataclass(frozen=True)
class Contract:
    """What a classifier file takes (pixels 0..255 become ``input_range``) and gives (``labels``, ``outputs``)."""

    height: int
    width: int
    channels: int                                   # 1 (greyscale) or 3 (RGB)
    layout: str = "NHWC"
    input_range: tuple[float, float] | None = None  # what pixels 0 and 255 become; None: unknown, must be given
    labels: tuple[str, ...] = ()                    # class names in output order; () numbers them
    outputs: str | None = None                      # "probabilities", "logits", or None: found from the scores
    source: str = ""                                # the model it was exported from
    origin: str = "file"                            # where this contract was read: metadata, manifest, file, flags

    def __post_init__(self):
        _check(self)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Pixel array shape of one image, (height, width, channels): what callers resize images to."""
        return self.height, self.width, self.channels

    def class_names(self, n: int) -> tuple[str, ...]:
        """The names of ``n`` outputs: the labels, or "class 0".."class n-1" for a file without them."""
        return self.labels if len(self.labels) == n else tuple(f"class {i}" for i in range(n))

    def fit(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 RGB images ``[N, h, w, 3]`` at this contract's size and channels (:func:`fit`)."""
        return fit(pixels, self.shape)

    def to_input(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels ``[N, H, W, C]`` 0..255 as the float values the graph expects, in its layout."""
        if self.input_range is None:
            raise EdgeCifarError("the model's input range is unknown: pass --input-range LOW,HIGH (what pixels 0 "
                                 "and 255 must become, e.g. 0,1 or -1,1)")
        low, high = self.input_range
        x = np.asarray(pixels, np.float32)
        if (low, high) != (0.0, 255.0):
            x = low + x * np.float32((high - low) / 255.0)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else x

    def with_flags(self, input_range: tuple[float, float] | None = None,
                   labels: tuple[str, ...] | None = None) -> "Contract":
        """This contract with what the user said (``--input-range``, ``--labels``) in place of what it held."""
        changes = {}
        if input_range is not None:
            changes["input_range"] = input_range
        if labels is not None:
            changes["labels"] = labels
        return dataclasses.replace(self, origin="flags", **changes) if changes else self

    def overridden(self, input_range: tuple[float, float] | None = None,
                   labels: tuple[str, ...] | None = None) -> list[str]:
        """What the user's flags change of what the file itself says (its embedded or recorded contract), one note
        each: the flag wins, and the user hears that it overrode the file."""
        notes = []
        if input_range is not None and self.input_range is not None and tuple(input_range) != self.input_range:
            notes.append(overrides_note(f"--input-range {input_range[0]:g},{input_range[1]:g}", self.origin,
                                        f"the range {self.input_range[0]:g}..{self.input_range[1]:g}"))
        if labels is not None and self.labels and tuple(labels) != self.labels:
            notes.append(overrides_note("--labels", self.origin, names_phrase(self.labels)))
        return [n for n in notes if n]

    def to_json(self) -> str:
        """The contract as embedded in a file: a compact JSON document with a version."""
        body = {"version": VERSION, "input": {"height": self.height, "width": self.width, "channels": self.channels,
                                              "layout": self.layout, "range": list(self.input_range or [])},
                "output": {"labels": list(self.labels), "meaning": self.outputs}, "source": self.source}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _check(c: Contract) -> None:
    """Refuse a contract no classifier could have (ValueError: callers name the file)."""
    for side in (c.height, c.width):
        if not isinstance(side, int) or not 1 <= side <= MAX_SIDE:
            raise ValueError(f"input side {side!r} is not in 1..{MAX_SIDE}")
    if c.channels not in (1, 3):
        raise ValueError(f"{c.channels} input channels: a classifier of photos takes 1 (grey) or 3 (RGB)")
    if c.layout not in LAYOUTS:
        raise ValueError(f"input layout {c.layout!r} is not one of {', '.join(LAYOUTS)}")
    if c.input_range is not None:
        low, high = c.input_range
        if not (math.isfinite(low) and math.isfinite(high) and low != high):
            raise ValueError(f"input range {low},{high} is not two different finite numbers")
    if c.outputs not in (None, *OUTPUTS):
        raise ValueError(f"outputs {c.outputs!r} are not one of {', '.join(OUTPUTS)}")
    if len(c.labels) > MAX_CLASSES or any(not isinstance(x, str) or not x or len(x) > MAX_LABEL for x in c.labels):
        raise ValueError(f"class names must be 1..{MAX_LABEL} characters each, at most {MAX_CLASSES:,} of them")


def from_json(text: str | bytes, where: str) -> Contract:
    """A contract embedded in a file (``where`` names it in the one-line error a malformed one gets)."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} contract")
        inp, out = doc["input"], doc["output"]
        rng = inp.get("range") or None
        return Contract(height=inp["height"], width=inp["width"], channels=inp["channels"],
                        layout=inp.get("layout", "NHWC"),
                        input_range=(float(rng[0]), float(rng[1])) if rng is not None else None,
                        labels=tuple(out.get("labels") or ()), outputs=out.get("meaning"),
                        source=str(doc.get("source", ""))[:500], origin="metadata")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelError(f"{where}: its {METADATA_NAME} metadata is malformed ({exc})") from None


def overrides_note(flag: str, origin: str, what: str) -> str | None:
    """One note: ``flag`` replaces ``what`` the file's own contract says; None when the contract is not the file's
    own (read from its shape, or already the flags')."""
    where = {"metadata": "embedded", "manifest": "recorded in edgecifar.json"}.get(origin)
    return f"{flag} overrides {what}, which its contract ({where}) says" if where else None


def names_phrase(labels: Sequence[str]) -> str:
    """``the class names a, b, c, ...``: a contract's labels in a note."""
    return f"the class names {', '.join(labels[:3])}{', ...' if len(labels) > 3 else ''}"


def fit(pixels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """uint8 RGB images ``[N, h, w, 3]`` (CIFAR-10's 32x32, say) at ``shape`` (height, width, 1 or 3 channels):
    each resized with an area filter when shrinking and bilinear when growing, grey as Pillow's luma."""
    pixels = np.asarray(pixels)
    if pixels.shape[1:] == tuple(shape):
        return pixels
    from PIL import Image

    height, width, channels = shape
    out = np.empty((len(pixels), *shape), np.uint8)
    for i, image in enumerate(pixels):
        img = Image.fromarray(np.ascontiguousarray(image, np.uint8))
        if img.size != (width, height):
            shrink = width <= img.width and height <= img.height
            img = img.resize((width, height), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
        out[i] = np.asarray(img.convert("L"))[..., None] if channels == 1 else np.asarray(img.convert("RGB"))
    return out


def quantized_range(scale: float, zero_point: int, dtype: np.dtype) -> tuple[float, float] | None:
    """The values an integer input can hold, ``scale * (q - zero_point)`` over the dtype, snapped to a common
    pixel range within :data:`SNAP_STEPS` steps (int8, scale 1, zero point -128: 0..255, ours; scale 1/255: 0..1,
    the converter recipe's). None for a float input, whose range the file does not say, and for a wider integer
    (TFLite 16x8's int16): quantized symmetrically about zero, it says only the largest magnitude, so 0..1 and
    -1..1 look alike."""
    dtype = np.dtype(dtype)
    if not scale or dtype.kind not in "iu" or dtype.itemsize > 1:
        return None
    info = np.iinfo(dtype)
    low, high = scale * (info.min - zero_point), scale * (info.max - zero_point)
    for common in COMMON_RANGES:
        if abs(common[0] - low) <= SNAP_STEPS * scale and abs(common[1] - high) <= SNAP_STEPS * scale:
            return common
    return float(low), float(high)


def parse_range(text: str) -> tuple[float, float]:
    """``--input-range LOW,HIGH`` (``0,1``, ``-1,1``, ``0,255``) as two floats, or one line saying why not."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise EdgeCifarError(f"--input-range {text!r}: expected LOW,HIGH, e.g. 0,1 or -1,1") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low == high:
        raise EdgeCifarError(f"--input-range {text!r}: LOW and HIGH must be two different finite numbers")
    return low, high


def read_labels(path: str | Path) -> tuple[str, ...]:
    """``--labels FILE``: one class name per line, in output order (blank lines and surrounding spaces dropped)."""
    path = Path(path)
    try:
        raw = path.read_bytes()[: MAX_CLASSES * (MAX_LABEL + 2)]
        names = tuple(line.strip() for line in raw.decode("utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeCifarError(f"{path}: cannot read class names ({getattr(exc, 'strerror', None) or exc})") from None
    if not names:
        raise EdgeCifarError(f"{path}: no class names (one per line)")
    bad = [n for n in names if len(n) > MAX_LABEL]
    if bad:
        raise EdgeCifarError(f"{path}: a class name longer than {MAX_LABEL} characters ({bad[0][:40]}...)")
    return names


def layout_of(shape) -> str:
    """NCHW when the second axis is the channel axis (1 or 3) and the last is not; else NHWC."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    return "NCHW" if len(dims) == 4 and dims[1] in (1, 3) and dims[3] not in (1, 3) else "NHWC"


def from_shape(path: Path, shape, input_range: tuple[float, float] | None) -> Contract:
    """A contract from the file alone: its input shape (``[N, H, W, C]`` or ``[N, C, H, W]``) and what its
    quantization says of the range. A shape no image classifier has is one ModelError line."""
    dims = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else None for d in shape]
    layout = layout_of(dims)
    if len(dims) != 4:
        raise ModelError(f"{path}: input has {len(dims)} dimensions; an image classifier takes 4 ([N, H, W, C] "
                         "or [N, C, H, W])")
    h, w, c = (dims[2], dims[3], dims[1]) if layout == "NCHW" else (dims[1], dims[2], dims[3])
    if None in (h, w, c):
        shown = "x".join("?" if d is None else str(d) for d in dims)
        raise ModelError(f"{path}: input shape {shown} leaves the image size open; edgecifar needs a fixed size")
    try:
        return Contract(h, w, c, layout=layout, input_range=input_range, origin="file")
    except ValueError as exc:
        raise ModelError(f"{path}: {exc}") from None


def from_manifest(entry: dict, where: str) -> Contract | None:
    """The contract ``edgecifar.json`` records for a file (files exported before contracts were embedded); None
    when the entry lacks one."""
    try:
        inp, out = entry["input"], entry.get("output") or {}
        shape = inp["shape"]
        layout = inp.get("layout", "NHWC")
        h, w, c = (shape[2], shape[3], shape[1]) if layout == "NCHW" else (shape[1], shape[2], shape[3])
        rng = inp.get("range")
        return Contract(int(h), int(w), int(c), layout=layout,
                        input_range=(float(rng[0]), float(rng[1])) if rng else None,
                        labels=tuple(out.get("labels") or entry.get("labels") or ()),
                        outputs=out.get("meaning") if out.get("meaning") in OUTPUTS else None,
                        source=str(entry.get("model", "")), origin="manifest")
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def looks_like_probabilities(scores: np.ndarray, tolerance: float = 0.02) -> bool:
    """Whether every row is non-negative and sums to 1 (within quantization's rounding): else logits."""
    if scores.size == 0:
        return True
    return bool((scores >= -1e-6).all() and np.all(np.abs(scores.sum(axis=1) - 1.0) <= tolerance))


def probabilities(scores: np.ndarray, outputs: str | None) -> tuple[np.ndarray, str]:
    """Scores as probabilities, and what they were: ``outputs`` when the contract says, else found from them."""
    meaning = outputs or ("probabilities" if looks_like_probabilities(scores) else "logits")
    return (scores if meaning == "probabilities" else softmax(scores)), meaning


def match_classes(model_labels: tuple[str, ...], outputs: int, data_labels: tuple[str, ...],
                  where: str) -> tuple[np.ndarray, str | None]:
    """For each of the model's ``outputs``, the index of the same class in the data (-1: a class the data lacks),
    and a note to say once (or None): by name when the file names its classes, else by index when the counts
    agree. A model that shares no class with the data is one EdgeCifarError line naming both."""
    if model_labels:
        wanted = {name.strip().lower(): i for i, name in enumerate(data_labels)}
        index = np.array([wanted.get(name.strip().lower(), -1) for name in model_labels], np.int64)
        if (index < 0).all():
            raise EdgeCifarError(f"{where}: none of its classes ({', '.join(model_labels[:5])}...) is a class of the "
                                 f"data ({', '.join(data_labels[:5])}...)")
        missing = [data_labels[i] for i in range(len(data_labels)) if i not in set(index.tolist())]
        extra = int((index < 0).sum())
        parts = ([f"{len(missing)} data classes it lacks ({', '.join(missing[:3])}...) count as wrong"] if missing
                 else []) + ([f"{extra} of its classes are not in the data"] if extra else [])
        return index, (f"{where}: classes matched by name; " + "; ".join(parts)) if parts else None
    if outputs != len(data_labels):
        raise EdgeCifarError(f"{where}: {outputs} outputs, no class names, and the data has {len(data_labels)} "
                             "classes: name its classes with --labels FILE (one per line, in output order)")
    return np.arange(outputs), (f"{where}: names no classes; output i taken as the data's class i "
                                f"({data_labels[0]}, {data_labels[1]}, ...; --labels FILE names them)")


def click_options(command):
    """``--input-range`` and ``--labels``, the same on every command that runs a file (bench, predict, export):
    what the user says of a file whose contract is missing or wrong. Parsed here, checked before any work."""
    import click

    def _range(ctx, param, value):
        return parse_range(value) if value else None

    def _labels(ctx, param, value):
        return read_labels(value) if value else None

    command = click.option("--labels", "labels", metavar="FILE", callback=_labels,
                           help="Class names, one per line in output order, for files that name none (or wrongly).")(command)
    return click.option("--input-range", "input_range", metavar="LOW,HIGH", callback=_range,
                        help="What pixels 0 and 255 must become for the file (e.g. 0,1 or -1,1), when its "
                             "contract does not say (a float file made elsewhere).")(command)


def peek(path: Path) -> Contract | None:
    """A file's contract read without a runtime (nothing runs, nothing native is loaded): what to decode photos at
    before the workers load the files. Embedded in a TFLite file or its manifest entry, else from its flatbuffer's
    input shape; an ONNX file only through its manifest. None when it cannot be read so."""
    from edgecifar import manifest, tflite_graph

    path = Path(path)
    try:
        if path.suffix.lower() == ".tflite":
            embedded = tflite_graph.metadata(path, METADATA_NAME)
            if embedded:
                return from_json(embedded, str(path))
        entry = manifest.entry_for(path)
        if entry is not None and (found := from_manifest(entry, str(path))) is not None:
            return found
        if path.suffix.lower() == ".tflite" and (shape := tflite_graph.input_shape(path)):
            return from_shape(path, shape, None)
    except EdgeCifarError:
        return None
    return None
