"""Any Keras image classifier as the files export writes: what it takes and gives (:class:`ModelSpec`, checked in
one line per refusal), the pixel range it expects (:func:`input_range`), and the model wrapped so that every
exported file takes raw pixels 0..255 and gives probabilities, as edgecifar's own models do (:func:`prepare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgecifar import contract as contracts
from edgecifar.errors import ModelError
from edgecifar.export import tta as tta_kinds
from edgecifar.export.job import INPUT_NAME, PIXEL_RANGE

#: Layers that rescale pixels inside a model: with one at its input, the model takes raw pixels 0..255.
RESCALING_LAYERS = ("Rescaling", "Normalization")
#: Layers that leave pixel values as they are at inference (resizing, cropping, augmentation, casts): the search
#: for a rescaling layer at the input looks through them.
TRANSPARENT_LAYERS = ("InputLayer", "Resizing", "CenterCrop", "Cropping2D", "ZeroPadding2D", "Activation",
                      "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
                      "RandomCrop", "RandomBrightness", "Identity")
#: Images the model is run on to see whether its outputs are probabilities or logits.
PROBE_IMAGES = 64


@dataclass(frozen=True)
class ModelSpec:
    """What a Keras image classifier takes and gives, read from the model."""

    height: int
    width: int
    channels: int                 # 1 or 3, channels last
    classes: int
    rescaling: str | None = None  # the Rescaling/Normalization layer at its input, None when it has none
    ours: bool = False            # an edgecifar model (a run, or the "pixels" input): takes pixels 0..255

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels


def _dims(shape) -> str:
    return ", ".join("N" if i == 0 else "?" if d is None else str(d) for i, d in enumerate(shape))


def check(model, where: str, run: bool = False) -> ModelSpec:
    """The model's :class:`ModelSpec`, or one ModelError line naming ``where`` and what export cannot take: several
    inputs or outputs, an input that is not a fixed-size float image, an output that is not one score per class.
    ``run``: the model comes from an edgecifar run folder."""
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except Exception:  # a subclassed model never called has no inputs
        raise ModelError(f"{where}: the model has no defined input (a subclassed model never built); save it "
                         "with a keras.Input of its image size") from None
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{where}: {len(inputs)} inputs and {len(outputs)} outputs; edgecifar exports an image "
                         "classifier: one image input [N, H, W, C] and one output of class scores [N, classes]")
    shape, out = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(shape) != 4:
        raise ModelError(f"{where}: input shape [{_dims(shape)}] is not an image; expected [N, height, width, "
                         "channels] with 1 or 3 channels last")
    if shape[1] is None or shape[2] is None:
        raise ModelError(f"{where}: input shape [{_dims(shape)}] leaves the image size open; save the model with a "
                         "fixed size (keras.Input((HEIGHT, WIDTH, CHANNELS))) and export that")
    if shape[3] not in (1, 3):
        first = " (channels first?)" if shape[1] in (1, 3) else ""
        raise ModelError(f"{where}: input shape [{_dims(shape)}] has {shape[3]} channels last{first}; edgecifar "
                         "exports channels-last models with 1 (grey) or 3 (RGB) channels")
    dtype = str(getattr(inputs[0], "dtype", "float32"))
    if "float" not in dtype:
        raise ModelError(f"{where}: its input is {dtype}; edgecifar exports models that take float pixels")
    if len(out) != 2 or out[1] is None or out[1] < 2:
        raise ModelError(f"{where}: output shape [{_dims(out)}] is not one score per class; expected [N, classes] "
                         "with at least 2 classes")
    try:
        contracts.Contract(int(shape[1]), int(shape[2]), int(shape[3]), labels=())
    except ValueError as exc:
        raise ModelError(f"{where}: {exc}") from None
    if out[1] > contracts.MAX_CLASSES:
        raise ModelError(f"{where}: {out[1]:,} classes; at most {contracts.MAX_CLASSES:,}")
    ours = run or getattr(inputs[0], "name", "") == INPUT_NAME
    return ModelSpec(int(shape[1]), int(shape[2]), int(shape[3]), int(out[1]), rescaling_at_input(model), ours)


def _consumers(layer) -> list:
    return [node.operation for node in getattr(layer, "_outbound_nodes", [])]


def rescaling_at_input(model, depth: int = 0):
    """The name of a Rescaling or Normalization layer the input reaches before any layer that computes (through
    resizing, cropping, inactive augmentation and nested models), or None."""
    if depth > 8:
        return None
    try:
        start = model.inputs[0]._keras_history.operation
    except Exception:
        return None
    stack, seen = _consumers(start), set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        kind = type(layer).__name__
        if kind in RESCALING_LAYERS:
            return layer.name
        if hasattr(layer, "inputs") and hasattr(layer, "layers"):  # a nested model: look at its own input
            found = rescaling_at_input(layer, depth + 1)
            if found:
                return found
        elif kind in TRANSPARENT_LAYERS:
            stack += _consumers(layer)
    return None


def input_range(given: tuple[float, float] | None, spec: ModelSpec, where: str,
                say: Callable[[str], None]) -> tuple[float, float]:
    """What the model expects for pixels 0 and 255: ``--input-range``, else 0..255 for edgecifar's own models and
    for a model with a Rescaling or Normalization layer at its input (said in one line: it is assumed), else
    refused in one line asking for --input-range.

    Why refuse rather than assume: a wrong range is no error, it is a confident wrong figure (a model that expects
    0..1 fed 0..255 "passed" at 46% where it scores 58%), and published models expect every range: Keras'
    MobileNetV2 takes -1..1 and has no layer that says so, most models trained on ``x / 255`` take 0..1 and say
    nothing either. A rescaling layer at the input is the one sign in the model that it takes raw pixels, and
    even that is a presumption (a Normalization layer adapted on 0..1 images takes 0..1), so it is said."""
    if given is not None:
        if given != PIXEL_RANGE:
            say(f"{where}: the exported files rescale pixels 0..255 to {given[0]:g}..{given[1]:g} before the model "
                "(--input-range), so they take raw pixels")
        return given
    if spec.ours:
        return PIXEL_RANGE
    if spec.rescaling:
        say(f"{where}: input range 0..255 assumed: its layer {spec.rescaling!r} rescales pixels inside; pass "
            "--input-range LOW,HIGH if it expects pixels 0 and 255 as other values")
        return PIXEL_RANGE
    raise ModelError(f"{where}: what it expects for pixels 0..255 is unknown (no Rescaling or Normalization layer at "
                     "its input): pass --input-range LOW,HIGH (e.g. 0,1 or -1,1; 0,255 if it takes raw pixels)")


def with_range(model, spec: ModelSpec, pixel_range: tuple[float, float]):
    """``model`` behind a Rescaling layer mapping pixels 0..255 to ``pixel_range`` (x * (HIGH-LOW)/255 + LOW), so
    that the files take raw pixels; the model itself for 0..255."""
    if tuple(pixel_range) == PIXEL_RANGE:
        return model
    import keras

    low, high = pixel_range
    inp = keras.Input(shape=spec.shape, dtype="float32", name=INPUT_NAME)
    x = keras.layers.Rescaling((high - low) / 255.0, offset=low, name="input_range")(inp)
    return keras.Model(inp, model(x), name=model.name)


def with_softmax(model, spec: ModelSpec):
    """``model`` followed by a softmax: the files give probabilities, as edgecifar's own files do."""
    import keras

    inp = keras.Input(shape=spec.shape, dtype="float32", name=INPUT_NAME)
    return keras.Model(inp, keras.layers.Softmax(name="probabilities")(model(inp)), name=model.name)


def gives_probabilities(model, images: np.ndarray) -> bool:
    """Whether the model's outputs on a few images are probabilities (non-negative rows summing to 1)."""
    scores = np.asarray(model(np.asarray(images[:PROBE_IMAGES], np.float32), training=False))
    return contracts.looks_like_probabilities(scores)


def prepare(model, spec: ModelSpec, pixel_range: tuple[float, float], images: np.ndarray, tta: str | None,
            where: str, say: Callable[[str], None]):
    """The model every file is written from: rescaled to take pixels 0..255, a softmax added when it gives logits
    (said), test-time augmentation inside when asked. Edgecifar's own models go through unchanged but for TTA."""
    model = with_range(model, spec, pixel_range)
    if not spec.ours and len(images) and not gives_probabilities(model, images):
        say(f"{where}: its outputs are not probabilities (rows that are not non-negative and summing to 1): the "
            "exported files end in a softmax")
        model = with_softmax(model, spec)
    return tta_kinds.get(tta).wrap(model) if tta else model
