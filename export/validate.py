"""Check an exported file the way a device will run it: through ``edgecifar.runtime`` (LiteRT or
onnxruntime, never TensorFlow's interpreter), against the Keras model on the validation images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgecifar import metrics, runtime
from edgecifar.errors import one_line
from edgecifar.export.job import quiet

PASSED, DROP, FAILED = "passed", "accuracy drop", "failed"
#: What a validation measures: accuracy against the data's labels, or, when the data has none that name the
#: model's classes, top-1 agreement with the Keras model (``drop`` is then the points of disagreement).
ACCURACY, AGREEMENT = "accuracy", "agreement with Keras"


@dataclass
class Validation:
    """How one file compares with Keras on the validation images; ``drop`` is in accuracy points (in points of
    disagreement with Keras when ``measure`` is :data:`AGREEMENT`: no labels, no accuracy)."""

    images: int
    accuracy: float | None
    keras_accuracy: float | None
    drop: float | None
    agreement: float | None
    max_abs_diff: float | None
    status: str
    error: str | None = None
    measure: str = ACCURACY

    def to_dict(self) -> dict:
        return asdict(self)


def failed(images: int, keras_accuracy: float | None, error: str, measure: str = ACCURACY) -> Validation:
    """The validation of a file that could not be written or run."""
    return Validation(images, None, keras_accuracy, None, None, None, FAILED, error, measure)


def keras_scores(model, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """The reference probabilities, in batches (the same call train uses for its accuracy)."""
    out = [np.asarray(model(images[i:i + batch].astype(np.float32), training=False))
           for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)


def validate(path: Path, images: np.ndarray, labels: np.ndarray | None, reference: np.ndarray,
             threshold: float, threads: int = 1) -> tuple[Validation, object | None]:
    """Load ``path`` in its runtime, score the images, compare; return the result and the loaded model.

    A file that will not load or run is ``failed``; one that runs but loses more than ``threshold``
    points is ``accuracy drop`` (a warning: the file is kept, the table says so). Without ``labels`` (the data
    does not name the model's classes) the measure is top-1 agreement with Keras, and more than ``threshold``
    points of disagreement is the drop.
    """
    measure = ACCURACY if labels is not None else AGREEMENT
    keras_acc = metrics.accuracy(reference, labels) if labels is not None else None
    try:
        with quiet():  # LiteRT announces its XNNPACK delegate on stderr
            model = runtime.load(path, threads=threads)
            scores = model.predict(images)
        if scores.shape != reference.shape or not np.all(np.isfinite(scores)):
            raise ValueError(f"output has shape {scores.shape} or non-finite values, expected {reference.shape}")
    except Exception as exc:  # any runtime fault becomes this file's one-line status
        return failed(len(images), keras_acc, one_line(exc), measure), None
    agreement = metrics.agreement(scores, reference)
    acc = metrics.accuracy(scores, labels) if labels is not None else None
    drop = round((keras_acc - acc) * 100, 4) if labels is not None else round((1.0 - agreement) * 100, 4)
    status = PASSED if drop <= threshold else DROP
    return Validation(len(images), acc, keras_acc, drop, agreement, metrics.max_abs_diff(scores, reference),
                      status, measure=measure), model


def micro_check(path: Path) -> dict:
    """Does ``path`` run in TensorFlow Lite for Microcontrollers, in what arena, and which ops stop it?

    In a process of its own (:func:`edgecifar.micro.check_in_process`: TFLite Micro reports errors as C++ prints
    and can crash):
    ``{"runs": bool, "arena_bytes": int | None, "unsupported_ops": [...], "summary": "<one line>"}``;
    ``runs`` is None when it could not be checked (tflite-micro not installed, or the check failed).
    """
    from edgecifar import micro

    if not micro.installed():
        return {"runs": None, "arena_bytes": None, "unsupported_ops": [],
                "summary": f"not checked: tflite-micro is not installed ({micro.INSTALL})"}
    result = micro.check_in_process(path)
    figures = result.get("figures") or {}
    if "TFLite Micro crashed" in (result.get("error") or ""):  # it aborts on this file: that is a verdict
        return {"runs": False, "arena_bytes": None, "unsupported_ops": [],
                "summary": result["error"].replace(f"{path}: ", "")}
    if not figures:  # the check itself failed (a bad file, a timeout): its error, not a verdict
        return {"runs": None, "arena_bytes": None, "unsupported_ops": [],
                "summary": f"not checked: {result.get('error', 'no result')}"}
    return {"runs": result.get("status") == "ok", "arena_bytes": figures.get("arena_bytes"),
            "arena_recorded_bytes": figures.get("arena_recorded_bytes"),
            "unsupported_ops": figures.get("unsupported_ops") or [], "fits": figures.get("fits") or [],
            "summary": figures.get("micro") or result.get("error")}


#: Export's latency figure (the doctor's files against full int8): one thread, batch 1, the median of this many
#: calls after a warm-up, in this process. A comparison made on the spot; ``edgecifar bench`` measures properly.
LATENCY_RUNS, LATENCY_WARMUP = 100, 10


def latency_ms(path: Path, image: np.ndarray, runs: int = LATENCY_RUNS, warmup: int = LATENCY_WARMUP) -> float | None:
    """The median time (ms) of one ``predict`` of ``image`` in ``path``'s runtime (pixels in, probabilities out:
    the runtime's call and the file's own quantization of its input and output); None when the file does not run.
    Export never imports the bench (tests/test_imports.py), whose worker times the runtime's call alone."""
    try:
        with quiet():
            model = runtime.load(path, threads=1)
            batch = np.asarray(image)[None]
            for _ in range(warmup):
                model.predict(batch)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                model.predict(batch)
                times.append(time.perf_counter() - start)
        return float(np.median(times) * 1e3)
    except Exception:  # the file validated; a timing that fails is a missing figure, not a failed format
        return None
