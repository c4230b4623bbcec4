"""Export's quantization doctor: which layers lose the accuracy in int8, and the cheapest file within a budget.

``export --int8 --explain`` ranks every layer by what int8 does to its output, with TensorFlow's own
``tf.lite.experimental.QuantizationDebugger`` on validation images: its default statistics of the difference between
each quantized layer and the same layer in float fed the same input (NumericVerify: the layer's own error, not what
reaches it), the root mean square error in quantization steps (``rmse/scale``, the debugger guide's measure), and
the signal-to-quantization-noise ratio of the output (SQNR, dB; from the float and quantized values themselves, the
debugger's ``layer_direct_compare_metrics``), over the whole tensor and per channel (the median over the channels
that carry signal). A layer is ranked by the lower of the two, to the whole dB, the earlier of two as bad first: a
tensor whose range one channel dominates (a bias of thousands beside values below 1) has a fine whole-tensor SQNR and
channels quantized to nothing, and only the per-channel figure shows it. For the first :data:`TRIED`, the accuracy
when that layer is kept in float32 is measured on the validation images: its output tensor leaves quantization (the
debugger's ``denylisted_nodes``), with the operators that read it, since a consumer that quantizes the tensor again
loses what the layer kept.

``--onnx-int8 --explain`` makes the same report with onnxruntime's ``qdq_loss_debug`` (each activation before and
after its QuantizeLinear/DequantizeLinear pair, and against the float model: whole-tensor SQNR by its own function,
and per channel), and the accuracy when a layer's nodes and its readers stay float (``nodes_to_exclude``).

``--max-drop POINTS`` searches for the cheapest TFLite file within POINTS of the float model on the validation
images: full int8 when it is; else layers kept in float, taken greedily in the order of the accuracy each
recovered alone (then the rest in rank order), a layer kept only when it lowers the drop, until the budget is met
or :data:`MAX_TRIALS` files were tried. When no set of single layers meets the budget, it keeps a float prefix
instead: the first 1, 2, 4, ... operators in float until a file meets the budget, then a bisection between the last
two, for the fewest (at most :data:`PREFIX_TRIALS` files). That is the loss no single layer carries: error that
starts in the first layers and compounds (research/README.md, mnv2_ft160_kd: single layers fall short, a float
prefix does not). Only the search and the report are written here: statistics, denylisting and quantization are the
libraries'. Per-layer 16-bit activations are not among the candidates: TensorFlow's
quantizer takes one activation type for the whole model (the 16x8 file is its own format, ``--int16x8``).
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgecifar.errors import one_line
from edgecifar.export import onnx as onnx_writer
from edgecifar.export import tflite
from edgecifar.export.job import ExportFailure, ExportJob, quiet
from edgecifar.export.onnx import Reader
from edgecifar.export.validate import ACCURACY, AGREEMENT, Validation, failed, validate
from edgecifar.metrics import accuracy
from edgecifar.units import plural

#: Layers whose accuracy when kept in float is measured (the report's top offenders), and rows in the terminal.
TRIED = 8
SHOWN = 5
#: Files the --max-drop search may try with single layers, and then with a float prefix (a gallop and a
#: bisection: about 2 log2 of the operators, 12 covers 64).
MAX_TRIALS = 16
PREFIX_TRIALS = 12
#: Validation images the statistics run on (spread over the set), in batches.
STATISTICS_IMAGES = 256
BATCH = 32
#: What ranks the layers (lower is worse).
METRIC = ("the lower of sqnr_db and channel_sqnr_db: the SQNR (dB) of the layer's int8 output against the same layer "
          "in float on the same input, over the whole tensor and the median over its channels")
ONNX_METRIC = ("the lower of sqnr_db and channel_sqnr_db: the SQNR (dB) of the activation after its QuantizeLinear/"
               "DequantizeLinear against before, over the whole tensor and the median over its channels (axis 1)")
#: ONNX operators that apply an activation to the output of the node before them.
ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
                         "Softplus", "PRelu"})
#: The terminal table's metric columns: (header, metric, format).
COLUMNS = (("SQNR dB", "sqnr_db", ".1f"), ("channel SQNR", "channel_sqnr_db", ".1f"),
           ("rmse/step", "rmse_per_step", ".2f"))
ONNX_COLUMNS = (("SQNR dB", "sqnr_db", ".1f"), ("channel SQNR", "channel_sqnr_db", ".1f"),
                ("vs float model", "model_sqnr_db", ".1f"))


# --------------------------------------------------------------------------- what is measured of a layer

def _powers(f: np.ndarray, g: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (``axis``): the power of the float values ``f`` and of their difference from ``g``."""
    f = np.moveaxis(np.asarray(f, np.float64), axis, -1) if np.ndim(f) else np.asarray(f, np.float64).reshape(1)
    g = np.moveaxis(np.asarray(g, np.float64), axis, -1) if np.ndim(g) else np.asarray(g, np.float64).reshape(1)
    f, err = f.reshape(-1, f.shape[-1]), (f - g).reshape(-1, f.shape[-1])
    return np.sum(f ** 2, 0), np.sum(err ** 2, 0)


def _db(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    return 10 * np.log10(signal / np.maximum(noise, 1e-30))


def median_channel_sqnr(f: np.ndarray, g: np.ndarray, axis: int = -1) -> float:
    """The median SQNR (dB) of ``g`` against ``f`` over the channels (``axis``) that carry signal: what per-tensor
    activation quantization does to a typical channel when a few channels set the range."""
    signal, noise = _powers(f, g, axis)
    live = signal > 0
    return float(np.median(_db(signal[live], noise[live]))) if live.any() else math.nan


def _dequantized(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (np.asarray(q, np.float64) - zero_point) * scale


def sqnr_db(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> float:
    """SQNR of the whole output tensor in dB (a ``layer_direct_compare_metrics`` function: float values, quantized
    values, scale, zero point); NaN for a tensor that is all zeros in float."""
    signal, noise = (part.sum() for part in _powers(f, _dequantized(q, scale, zero_point)))
    return float(_db(signal, noise)) if signal > 0 else math.nan


def channel_sqnr_db(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> float:
    """:func:`median_channel_sqnr` of a TFLite tensor (channels last), as ``layer_direct_compare_metrics`` calls it."""
    return median_channel_sqnr(f, _dequantized(q, scale, zero_point))


def rmse(diffs: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(diffs, dtype=np.float64))))


LAYER_METRICS = {"rmse": rmse}
DIRECT_METRICS = {"sqnr_db": sqnr_db, "channel_sqnr_db": channel_sqnr_db}


def severity(metrics: dict[str, float], keys: Sequence[str] = ("sqnr_db", "channel_sqnr_db")) -> float:
    """The ranking key: the lowest SQNR among ``keys`` (NaN, a silent tensor, ranks last)."""
    values = [metrics[k] for k in keys if k in metrics and not math.isnan(metrics[k])]
    return min(values) if values else math.inf


# --------------------------------------------------------------------------- the report

@dataclass
class Layer:
    """One layer's output as int8 leaves it, and what keeping it in float does to the file."""

    tensor: str                           # its output tensor (TFLite) or activation (ONNX)
    op: str
    metrics: dict[str, float]
    keeps: tuple[str, ...] = ()           # what is kept in float with it: tensors (TFLite) or nodes (ONNX)
    accuracy: float | None = None         # validation accuracy (agreement with Keras without labels), kept in float
    drop: float | None = None             # points below Keras, kept in float
    recovered: float | None = None        # points recovered against the full int8 file
    error: str | None = None              # why it could not be tried

    @property
    def name(self) -> str:
        """A readable name: the tensor's first fused name without the model's prefix (``block_2_add_1/Add``)."""
        first = self.tensor.split(";")[0]
        parts = first.split("/")
        return "/".join(parts[1:]) if len(parts) > 2 else first

    @property
    def severity(self) -> float:
        return severity(self.metrics)

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


@dataclass
class Explanation:
    """One int8 format's layers, worst first, and the full int8 file they are measured against."""

    title: str                            # the format's title ("TFLite int8")
    file: str                             # the int8 file explained
    metric: str
    columns: tuple[tuple[str, str, str], ...]   # the terminal table's metric columns
    images: int                           # validation images the statistics ran on
    full: Validation                      # the int8 file as quantized here, nothing kept
    layers: list[Layer] = field(default_factory=list)

    def offenders(self, n: int = SHOWN) -> list[Layer]:
        return self.layers[:n]

    def to_dict(self) -> dict:
        return {"format": self.title, "file": self.file, "metric": self.metric, "statistics_images": self.images,
                "full_int8": self.full.to_dict(),
                "layers": [{"rank": i + 1, **layer.to_dict()} for i, layer in enumerate(self.layers)]}


def rank(layers: list[Layer]) -> list[Layer]:
    """Worst first, by whole dB; ``layers`` come in graph order, which breaks ties (sorted is stable): errors flow
    forward, so of two layers as bad the earlier is the likelier cause (a layer whose input int8 zeroed reads as
    badly as the layer that zeroed it, as the softmax after a broken layer does)."""
    return sorted(layers, key=lambda layer: round(layer.severity) if math.isfinite(layer.severity) else math.inf)


# --------------------------------------------------------------------------- the search

@dataclass
class Trial:
    """One candidate file: the layers kept in float (their tensors), or its first ``prefix`` operators, and how it
    validated."""

    kept: tuple[str, ...]
    validation: Validation
    prefix: int = 0                       # > 0: the first that many operators in float (``kept`` is then empty)

    @property
    def drop(self) -> float:
        v = self.validation
        return math.inf if v.drop is None else v.drop

    def to_dict(self) -> dict:
        return {"kept": list(self.kept), "float_prefix_ops": self.prefix, "drop": self.validation.drop,
                "accuracy": self.validation.accuracy, "agreement": self.validation.agreement,
                "status": self.validation.status, "error": self.validation.error}


@dataclass
class Search:
    """What ``--max-drop`` found: the full int8 file's drop, every file tried, and the one chosen."""

    budget: float
    full: Validation
    trials: list[Trial] = field(default_factory=list)
    chosen: Trial | None = None           # None: full int8 is the answer (or nothing tried beat it)

    @property
    def met(self) -> bool:
        best = self.chosen.drop if self.chosen else (self.full.drop if self.full.drop is not None else math.inf)
        return best <= self.budget

    def to_dict(self) -> dict:
        return {"budget": self.budget, "met": self.met, "full_int8": self.full.to_dict(),
                "chosen": self.chosen.to_dict() if self.chosen else None,
                "trials": [t.to_dict() for t in self.trials]}


def candidates(layers: Sequence[Layer]) -> list[Layer]:
    """The order the search tries layers in: those measured alone, by the points each recovered (most first), then
    the others in rank order."""
    tried = [layer for layer in layers if layer.recovered is not None]
    rest = [layer for layer in layers if layer.recovered is None and layer.error is None]
    return sorted(tried, key=lambda layer: -layer.recovered) + rest


def search(full: Validation, budget: float, layers: Sequence[Layer],
           keep: Callable[[tuple[str, ...]], Validation], max_trials: int = MAX_TRIALS,
           keep_prefix: Callable[[int], Validation] | None = None, operators: int = 0,
           prefix_trials: int = PREFIX_TRIALS) -> Search:
    """The greedy search: full int8 when within ``budget``; else add the :func:`candidates` one at a time, each
    kept only when the file it makes (``keep(tensors)``) drops less than the best so far, until one is within the
    budget or ``max_trials`` files were tried; then, if none is, :func:`search_prefix` over the model's
    ``operators`` (``keep_prefix(n)``: the file with the first n in float), whose fewest within the budget wins.
    The chosen file is the one within the budget, else the best tried (None when none beat full int8).
    Pure but for ``keep`` and ``keep_prefix``, which the tests may give tables of drops."""
    result = Search(budget, full)
    if full.drop is not None and full.drop <= budget:
        return result
    best_drop = math.inf if full.drop is None else full.drop
    kept: tuple[str, ...] = ()
    for layer in candidates(layers)[:max_trials]:
        trial = Trial(kept + (layer.tensor,), keep(kept + (layer.tensor,)))
        result.trials.append(trial)
        if trial.drop < best_drop:
            kept, best_drop, result.chosen = trial.kept, trial.drop, trial
            if best_drop <= budget:
                return result
    if keep_prefix is None or operators < 1:
        return result
    prefixes = search_prefix(budget, operators, keep_prefix, prefix_trials)
    result.trials += prefixes
    if not prefixes:
        return result
    within = [t for t in prefixes if t.drop <= budget]
    best = min(within, key=lambda t: t.prefix) if within else min(prefixes, key=lambda t: (t.drop, t.prefix))
    if best.drop < best_drop:
        result.chosen = best
    return result


def search_prefix(budget: float, operators: int, keep_prefix: Callable[[int], Validation],
                  max_trials: int = PREFIX_TRIALS) -> list[Trial]:
    """The fewest first operators kept in float for a file within ``budget``: 1, 2, 4, ... of the ``operators``
    until one file meets it, then a bisection between the last that did not and the first that did (a drop that
    falls as the float prefix grows, as error that starts early and compounds does). Every file tried, in order."""
    trials: list[Trial] = []

    def meets(n: int) -> bool:
        trials.append(Trial((), keep_prefix(n), prefix=n))
        return trials[-1].drop <= budget

    below, above, n = 0, None, 1          # below: most operators known short of the budget; above: fewest within
    while len(trials) < max_trials:
        if meets(n):
            above = n
            break
        below = n
        if n == operators:
            break
        n = min(2 * n, operators)
    while above is not None and above - below > 1 and len(trials) < max_trials:
        middle = (below + above) // 2
        if meets(middle):
            above = middle
        else:
            below = middle
    return trials


# --------------------------------------------------------------------------- what both doctors share

class Doctor:
    """What a doctor of one int8 format does with the export's validation images: make a file with some layers kept
    in float, validate it in its device runtime as export validates every file (cached by what is kept), and
    report a file it could not make as a failed validation. Subclasses say how files are made and layers measured."""

    title = ""
    tool = ""
    metric = METRIC
    columns = COLUMNS
    suffix = ""

    def __init__(self, job: ExportJob, images: np.ndarray, labels: np.ndarray | None, reference: np.ndarray,
                 threshold: float, folder: Path):
        self.job, self.images, self.labels, self.reference, self.threshold = job, images, labels, reference, threshold
        self.folder = folder
        self._validations: dict[tuple[str, ...], Validation] = {}

    def layers(self) -> list[Layer]:
        """Every quantized layer's statistics, in graph order."""
        raise NotImplementedError

    def write(self, kept: tuple[str, ...], path: Path) -> None:
        """The file with ``kept`` left in float, at ``path`` (ExportFailure when it cannot be made)."""
        raise NotImplementedError

    def keeps(self, tensor: str) -> tuple[str, ...]:
        """What is left in float to keep the layer whose output is ``tensor``."""
        raise NotImplementedError

    def validate(self, kept: tuple[str, ...]) -> Validation:
        """The file keeping ``kept`` in float, validated; () is the full int8 file."""
        if kept not in self._validations:
            path = self.folder / f"trial{len(self._validations)}{self.suffix}"
            try:
                self.write(kept, path)
                self._validations[kept] = validate(path, self.images, self.labels, self.reference, self.threshold)[0]
            except ExportFailure as exc:
                self._validations[kept] = failed(len(self.images), self._keras_accuracy(), str(exc),
                                                 ACCURACY if self.labels is not None else AGREEMENT)
        return self._validations[kept]

    def _keras_accuracy(self) -> float | None:
        return accuracy(self.reference, self.labels) if self.labels is not None else None

    def denylist(self, tensors: tuple[str, ...]) -> tuple[str, ...]:
        """What is left in float to keep the layers whose outputs are ``tensors``, each once."""
        return tuple(dict.fromkeys(t for tensor in tensors for t in self.keeps(tensor)))

    def keep_layers(self, tensors: tuple[str, ...]) -> Validation:
        """The file keeping the layers whose output tensors are ``tensors`` in float, validated."""
        return self.validate(self.denylist(tensors))


# --------------------------------------------------------------------------- TFLite: QuantizationDebugger

def statistics_images(images: np.ndarray, n: int = STATISTICS_IMAGES, batch: int = BATCH) -> np.ndarray:
    """Up to ``n`` images spread evenly over ``images`` (the validation set is ordered by class in places), a
    whole number of ``batch``es when there are that many: the debugger sizes its interpreter on the first batch
    and refuses a shorter last one."""
    n = min(n, len(images))
    n = n - n % batch if n >= batch else n
    return images[np.linspace(0, len(images) - 1, n).astype(int)] if n < len(images) else images


def _batches(images: np.ndarray) -> Callable[[], object]:
    """The debugger's ``debug_dataset``: a factory of one-input samples, :data:`BATCH` images each."""
    return lambda: ([images[i:i + BATCH].astype(np.float32)] for i in range(0, len(images), BATCH))


def tensor_names(content: bytes) -> list[str]:
    """The names of a .tflite flatbuffer's tensors (first subgraph), by index."""
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(content)).subgraphs[0]
    return [t.name.decode() for t in graph.tensors]


def readers(content: bytes) -> dict[str, tuple[str, ...]]:
    """Tensor name -> the output tensors of the operators that read it, from a .tflite flatbuffer."""
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(content)).subgraphs[0]
    names = [t.name.decode() for t in graph.tensors]
    out: dict[str, list[str]] = {}
    for op in graph.operators:
        for i in op.inputs:
            if i >= 0:
                out.setdefault(names[i], []).extend(names[o] for o in op.outputs)
    return {name: tuple(dict.fromkeys(outputs)) for name, outputs in out.items()}


class TFLiteDoctor(Doctor):
    """The int8 converter of the job, calibrated once inside TensorFlow's QuantizationDebugger: its layer statistics,
    and any file with some layers kept in float (``denylisted_nodes``, ``get_nondebug_quantized_model``)."""

    title = "TFLite int8"
    tool = "TensorFlow's QuantizationDebugger"
    suffix = ".tflite"

    def __init__(self, job: ExportJob, images: np.ndarray, labels: np.ndarray | None, reference: np.ndarray,
                 threshold: float, folder: Path):
        import tensorflow as tf

        super().__init__(job, images, labels, reference, threshold, folder)
        self._tf = tf
        self._bytes: dict[tuple[str, ...], bytes] = {}
        try:
            with quiet():
                self.debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=tflite.integer_converter(job), debug_dataset=_batches(job.calibration[:1]),
                    debug_options=tf.lite.experimental.QuantizationDebugOptions(fully_quantize=True))
        except Exception as exc:
            raise ExportFailure(f"QuantizationDebugger failed ({one_line(exc)})") from None
        self.readers = readers(self.debugger.calibrated_model)
        self.tensors = set(tensor_names(self.debugger.calibrated_model))
        self.operators = tflite.operator_outputs(self.debugger.calibrated_model)

    def layers(self) -> list[Layer]:
        """Every quantized layer's statistics on the statistics images, in graph order.

        The debug model is run by a second debugger made from its bytes: only that way does it keep every tensor
        (``experimental_preserve_all_tensors``), without which the float and quantized values handed to
        ``layer_direct_compare_metrics`` may be whatever later operators wrote over them (measured here: a dense
        layer's SQNR read 4.4 dB instead of 19.6)."""
        tf = self._tf
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_debug_metrics=LAYER_METRICS, layer_direct_compare_metrics=DIRECT_METRICS, fully_quantize=True)
        try:
            with quiet():
                debug_model = self.debugger.get_debug_quantized_model()
                stats = tf.lite.experimental.QuantizationDebugger(
                    quant_debug_model_content=debug_model, debug_dataset=_batches(statistics_images(self.images)),
                    debug_options=options)
                stats.run()
                dump = io.StringIO()
                stats.layer_statistics_dump(dump)
        except Exception as exc:
            raise ExportFailure(f"QuantizationDebugger failed ({one_line(exc)})") from None
        names = tensor_names(debug_model)
        return [self._layer(row, names) for row in csv.DictReader(io.StringIO(dump.getvalue()))]

    def _layer(self, row: dict[str, str], names: list[str]) -> Layer:
        """One row of the debugger's statistics dump as a Layer (rmse/scale added: the error in quantization steps)."""
        skip = {"op_name", "tensor_name", "tensor_idx", "zero_point"}
        metrics = {k: float(v) for k, v in row.items() if k not in skip and v not in ("", None)}
        if metrics.get("scale"):
            metrics["rmse_per_step"] = metrics["rmse"] / metrics["scale"]
        tensor = self._calibrated_name(names[int(row["tensor_idx"])], row["tensor_name"])
        return Layer(tensor, row["op_name"], metrics, keeps=self.keeps(tensor))

    def _calibrated_name(self, debug_name: str, dumped: str) -> str:
        """The calibrated model's name of a debug model's tensor, which denylisting takes. The debug model appends a
        digit to most names (``.../Mean`` becomes ``.../Mean1``), not to the model's output; the dump drops a last
        digit always, cutting ``StatefulPartitionedCall_1:0`` to ``...:``, a name that denylists nothing."""
        for name in (debug_name, debug_name[:-1], dumped):
            if name in self.tensors:
                return name
        return dumped

    def quantized(self, kept: tuple[str, ...]) -> bytes:
        """The int8 file with the tensors ``kept`` (and nothing else) left in float."""
        if kept not in self._bytes:
            tf = self._tf
            try:
                with quiet():
                    self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                        denylisted_nodes=list(kept) or None, fully_quantize=True)
                    self._bytes[kept] = self.debugger.get_nondebug_quantized_model()
            except Exception as exc:
                raise ExportFailure(f"int8 with {len(kept)} tensors in float failed ({one_line(exc)})") from None
        return self._bytes[kept]

    def write(self, kept: tuple[str, ...], path: Path) -> None:
        """The file with the tensors ``kept`` in float, int8 input checked, with the job's contract."""
        content = self.quantized(kept)
        tflite.check_int8_input(content)
        tflite.write_with_contract(self.job, path, content)

    def keeps(self, tensor: str) -> tuple[str, ...]:
        """The tensor and the outputs of the operators that read it: a reader left quantized would quantize the
        tensor again with the range that ruined it."""
        return (tensor, *self.readers.get(tensor, ()))

    def prefix(self, n: int) -> tuple[str, ...]:
        """The output tensors of the first ``n`` operators: what ``--int8-float-ops n`` keeps in float."""
        return tuple(t for outputs in self.operators[:n] for t in outputs)

    def keep_prefix(self, n: int) -> Validation:
        """The file with the first ``n`` operators in float, validated."""
        return self.validate(self.prefix(n))


def explain(doctor: Doctor, file: str, tried: int = TRIED, say: Callable[[str], None] = lambda _: None) -> Explanation:
    """The ranked report of one int8 format: statistics of every layer, and the first ``tried`` layers each kept
    in float alone, measured against the full int8 file as the same doctor quantizes it."""
    full = doctor.validate(())
    layers = rank(doctor.layers())
    explanation = Explanation(doctor.title, file, doctor.metric, doctor.columns, len(statistics_images(doctor.images)),
                              full, layers)
    for i, layer in enumerate(layers[:tried]):
        say(f"{doctor.title}: keeping {layer.name} in float ({i + 1}/{min(tried, len(layers))})")
        v = doctor.keep_layers((layer.tensor,))
        if v.drop is None:
            layer.error = v.error
            continue
        layer.accuracy = v.accuracy if v.accuracy is not None else v.agreement
        layer.drop = v.drop
        layer.recovered = round(full.drop - v.drop, 4) if full.drop is not None else None
    return explanation


# --------------------------------------------------------------------------- ONNX: qdq_loss_debug

class OnnxDoctor(Doctor):
    """The ONNX int8 format's report, from onnxruntime's ``qdq_loss_debug``, and files with layers kept in float
    by ``quantize_static(nodes_to_exclude=...)``."""

    title = "ONNX int8"
    tool = "onnxruntime's qdq_loss_debug"
    metric = ONNX_METRIC
    columns = ONNX_COLUMNS
    suffix = ".onnx"

    def __init__(self, job: ExportJob, images: np.ndarray, labels: np.ndarray | None, reference: np.ndarray,
                 threshold: float, folder: Path):
        import onnx

        super().__init__(job, images, labels, reference, threshold, folder)
        self.prepared = onnx_writer.prepare(job, folder)

        graph = onnx.load(self.prepared).graph
        self.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                       for v in (*graph.value_info, *graph.input, *graph.output)}
        self.nodes = list(graph.node)
        self.producer = {out: node for node in graph.node for out in node.output}
        self.readers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)

    def _quantized(self, exclude: tuple[str, ...], name: str) -> Path:
        path = self.folder / name
        onnx_writer.quantize(self.prepared, path, self.job.calibration, exclude)
        return path

    def layers(self) -> list[Layer]:
        """Every activation's SQNR after its QDQ pair (``qdq_err``: onnxruntime's own measure, and per channel) and
        against the float model (``xmodel_err``), averaged over batches of the statistics images (as the TFLite
        debugger averages its batches); one batch at a time, since every activation of a batch is kept in memory."""
        from onnxruntime.quantization import qdq_loss_debug as qdq

        qdq_model = self._quantized((), "qdq.onnx")
        float_aug, qdq_aug = self.folder / "float_aug.onnx", self.folder / "qdq_aug.onnx"
        per_batch: dict[str, dict[str, list[float]]] = {}
        images = statistics_images(self.images)
        try:
            with quiet():
                qdq.modify_model_output_intermediate_tensors(str(self.prepared), str(float_aug))
                qdq.modify_model_output_intermediate_tensors(str(qdq_model), str(qdq_aug))
                for i in range(0, len(images), BATCH):
                    batch = images[i:i + BATCH]
                    matched = qdq.create_activation_matching(
                        qdq.collect_activations(str(qdq_aug), Reader(batch)),
                        qdq.collect_activations(str(float_aug), Reader(batch)))
                    for name, errors in qdq.compute_activation_error(matched).items():
                        found = per_batch.setdefault(name, {})
                        silent = not any(np.any(a) for a in matched[name]["pre_qdq"])  # its 0 dB means nothing
                        found.setdefault("sqnr_db", []).append(math.nan if silent else errors["qdq_err"])
                        if "xmodel_err" in errors:
                            found.setdefault("model_sqnr_db", []).append(errors["xmodel_err"])
                        found.setdefault("channel_sqnr_db", []).append(self._channel_sqnr(name, matched[name]))
        except Exception as exc:
            raise ExportFailure(f"onnxruntime qdq_loss_debug failed ({one_line(exc)})") from None
        order = {out: i for i, node in enumerate(self.nodes) for out in node.output}
        return [Layer(name, self._op(name), {k: float(np.nanmean(v)) if not np.all(np.isnan(v)) else math.nan
                                             for k, v in errors.items()}, keeps=self.keeps(name))
                for name, errors in sorted(per_batch.items(), key=lambda item: order.get(item[0], -1))]

    def _op(self, name: str) -> str:
        producer = self.producer.get(name)
        return producer.op_type if producer is not None else "input"

    def _channel_sqnr(self, name: str, match: dict) -> float:
        """The median channel SQNR (axis 1, ONNX's NCHW) after the QDQ pair, from the flattened activations
        qdq_loss_debug saves, put back in the tensor's shape; NaN when the shape is not known."""
        shape = self.shapes.get(name)
        if not shape or any(not isinstance(d, int) or d <= 0 for d in shape[1:]) or len(shape) < 2:
            return math.nan
        pre, post = (np.concatenate(match[k]).reshape(-1, *shape[1:]) for k in ("pre_qdq", "post_qdq"))
        return median_channel_sqnr(pre, post, axis=1)

    def keeps(self, tensor: str) -> tuple[str, ...]:
        """The nodes that stay float when ``tensor`` does: its producer (with the node before it when the producer
        is an activation: onnxruntime quantizes a Conv's output before its Relu with the same range), and every
        node that reads it."""
        nodes, producer = [], self.producer.get(tensor)
        if producer is not None:
            nodes.append(producer)
            if producer.op_type in ACTIVATIONS and producer.input and producer.input[0] in self.producer:
                nodes.append(self.producer[producer.input[0]])
        nodes += self.readers.get(tensor, [])
        return tuple(dict.fromkeys(node.name for node in nodes if node.name))

    def write(self, kept: tuple[str, ...], path: Path) -> None:
        """The file with the nodes ``kept`` excluded from quantization, saved as the int8 writer saves it."""
        onnx_writer.save_int8(self._quantized(kept, "quantized.onnx"), path, self.job)


# --------------------------------------------------------------------------- one export's diagnosis

@dataclass
class Diagnosis:
    """Everything the doctor found in one export: a report per int8 format asked for, and the search's result."""

    explanations: list[Explanation] = field(default_factory=list)
    search: Search | None = None
    mixed: bytes | None = None            # the chosen file's bytes, for the mixed format row
    kept_layers: list[Layer] = field(default_factory=list)   # the chosen file's layers (a prefix: one per operator)
    failures: list[str] = field(default_factory=list)

    @property
    def float_prefix(self) -> int:
        """The chosen file's float prefix, in operators (0: it keeps layers, or nothing was chosen)."""
        chosen = self.search.chosen if self.search else None
        return chosen.prefix if chosen else 0

    @property
    def kept_names(self) -> list[str]:
        return [layer.name for layer in self.kept_layers]

    def kept_summary(self) -> str:
        """What the chosen file keeps in float, counted: "2 layers", "its first 13 operators"."""
        if self.float_prefix:
            return f"its first {plural(self.float_prefix, 'operator')}"
        return plural(len(self.kept_layers), "layer")

    def kept_phrase(self) -> str:
        """:meth:`kept_summary` with names: every layer's, or the prefix's first and last."""
        names = self.kept_names
        if self.float_prefix:
            return f"{self.kept_summary()} ({names[0]} to {names[-1]})" if len(names) > 1 \
                else f"{self.kept_summary()} ({', '.join(names)})"
        return f"{self.kept_summary()}: {', '.join(names)}"

    def to_dict(self) -> dict:
        return {"explanations": [e.to_dict() for e in self.explanations],
                "max_drop": self.search.to_dict() if self.search else None,
                "kept_in_float": self.kept_names, "float_prefix_ops": self.float_prefix,
                "failures": self.failures}


#: Format key -> the doctor that explains it.
DOCTORS = {"int8": TFLiteDoctor, "onnx_int8": OnnxDoctor}


def diagnose(job: ExportJob, keys: Sequence[str], files: dict[str, str], images: np.ndarray,
             labels: np.ndarray | None, reference: np.ndarray, threshold: float, max_drop: float | None,
             say: Callable[[str], None] = lambda _: None, written_int8: Validation | None = None) -> Diagnosis:
    """Explain each int8 format of ``keys`` (format key -> the doctor in :data:`DOCTORS`; ``files`` names their
    files), and with ``max_drop`` search the TFLite one, from ``written_int8`` (the written file's validation: the
    budget judges the file that ships) when given. A doctor that fails is one line in ``failures``; the export's
    files stay written."""
    result = Diagnosis()
    with tempfile.TemporaryDirectory(prefix="edgecifar-doctor-") as tmp:
        for key in keys:
            folder = Path(tmp) / key
            folder.mkdir()
            try:
                say(f"{DOCTORS[key].title}: per-layer statistics ({DOCTORS[key].tool})")
                doctor = DOCTORS[key](job, images, labels, reference, threshold, folder)
                explanation = explain(doctor, files[key], say=say)
                result.explanations.append(explanation)
                if key == "int8" and max_drop is not None:
                    _search(doctor, explanation, max_drop, result, say, written_int8)
            except ExportFailure as exc:
                result.failures.append(f"{DOCTORS[key].title} --explain: {exc}")
    return result


def _search(doctor: TFLiteDoctor, explanation: Explanation, budget: float, result: Diagnosis,
            say: Callable[[str], None], written_int8: Validation | None = None) -> None:
    """Run the search on the TFLite doctor and keep the chosen file's bytes for the mixed format row."""
    full = written_int8 or explanation.full
    drop = full.drop
    say(f"--max-drop {budget:g}: full int8 drops {drop:.2f} points" if drop is not None
        else f"--max-drop {budget:g}: full int8 did not validate")
    def keep_prefix(n: int) -> Validation:
        say(f"--max-drop {budget:g}: keeping the first {plural(n, 'operator')} of {len(doctor.operators)} in float")
        return doctor.keep_prefix(n)

    found = search(full, budget, explanation.layers, doctor.keep_layers, keep_prefix=keep_prefix,
                   operators=len(doctor.operators))
    result.search = found
    chosen = found.chosen
    if chosen is None:
        return
    by_tensor = {layer.tensor: layer for layer in explanation.layers}
    if chosen.prefix:   # one layer per operator, by its first output (an unquantized one by its tensor alone)
        firsts = [outputs[0] for outputs in doctor.operators[:chosen.prefix] if outputs]
        result.kept_layers = [by_tensor.get(t) or Layer(t, "", {}) for t in firsts]
        result.mixed = doctor.quantized(doctor.prefix(chosen.prefix))
    else:
        result.kept_layers = [by_tensor[t] for t in chosen.kept]
        result.mixed = doctor.quantized(doctor.denylist(chosen.kept))
