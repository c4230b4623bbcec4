"""Run exported files with nothing but numpy and a runtime: LiteRT (or the legacy tflite-runtime)
for ``.tflite``, onnxruntime for ``.onnx``. Never imports TensorFlow: this is what runs on a device.

Every model takes uint8 or float pixels ``[N, H, W, C]`` (0-255, at the size its contract says) and returns
float32 class probabilities ``[N, classes]``. What the graph wants is the file's contract
(:mod:`edgecifar.contract`: embedded in the file, else in the ``edgecifar.json`` beside it, else read from the
file itself): pixels are mapped to its input range and layout, quantized with the file's own scale and zero
point, and outputs that are logits are put through a softmax.

A model file is untrusted data: everything the runtimes raise about it (loading, ``allocate_tensors``,
``invoke``) becomes one :class:`~edgecifar.errors.ModelError` line naming the file. A file can also crash
the native runtime outright, which no Python code survives: callers run models in a worker process
(``edgecifar.bench.worker``, ``edgecifar.bench.predict_worker``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from edgecifar import contract as contracts
from edgecifar.contract import Contract
from edgecifar.errors import EdgeCifarError, ModelError, native_stderr_filtered, one_line

#: TFLite interpreters in order of preference: module name -> runtime label.
TFLITE_RUNTIMES: dict[str, str] = {
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}

#: runtime label -> its name in messages.
RUNTIME_NAMES: dict[str, str] = {"litert": "LiteRT", "tflite-runtime": "tflite-runtime", "onnxruntime": "onnxruntime"}

#: runtime label -> the distribution pip installs it from.
PIP_NAMES: dict[str, str] = {"litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime"}
assert set(PIP_NAMES) == set(TFLITE_RUNTIMES), "every TFLite runtime needs its pip name"

#: file suffix -> (the packages that can run it, any one will do; what to say when none is installed).
#: LiteRT comes with the base install, onnxruntime with the ``bench`` (or ``train``) extra.
RUNTIME_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    ".tflite": (tuple(m.split(".")[0] for m in TFLITE_RUNTIMES.values()),
                "no TFLite runtime is installed (pip install ai-edge-litert)"),
    ".onnx": (("onnxruntime",), "onnxruntime is not installed (pip install 'edgecifar[bench]')"),
}


def missing_runtime(path: str | Path) -> str | None:
    """None when a runtime for ``path``'s kind of file is installed here, else what is missing and what
    installs it. Looks the packages up without importing them (no runtime start-up cost)."""
    packages, missing = RUNTIME_PACKAGES[Path(path).suffix.lower()]
    return None if any(importlib.util.find_spec(p) for p in packages) else missing


def without_tflite_info(text: str) -> str:
    """Everything but TFLite's ``INFO:`` lines, for :func:`edgecifar.errors.native_stderr_filtered`.

    LiteRT's C++ logger writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to fd 2
    (no environment variable turns it off; ``TF_CPP_MIN_LOG_LEVEL`` does not); its warnings and errors stay.
    """
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("INFO: "))


class Model(Protocol):
    path: Path
    runtime: str
    contract: Contract

    def predict(self, images: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Quant:
    """Affine quantization of a tensor: real = scale * (q - zero_point). scale 0 means float."""

    scale: float
    zero_point: int
    dtype: np.dtype

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if not self.scale:
            return x.astype(self.dtype, copy=False)
        info = np.iinfo(self.dtype)
        return np.clip(np.round(x / self.scale) + self.zero_point, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if not self.scale:
            return q.astype(np.float32, copy=False)
        return (self.scale * (q.astype(np.float32) - self.zero_point)).astype(np.float32)


def model_source(path: Path) -> str | bytes:
    """What to hand a runtime for ``path``: the path itself, or the file's bytes when its name is not UTF-8.

    Python keeps such a name's undecodable bytes as lone surrogates, which the runtimes' C++ bindings cannot
    turn into a ``std::string``: the file would be called "not a loadable model". Both runtimes take the
    model's bytes instead (a path stays the default: onnxruntime finds external weights beside it)."""
    try:
        str(path).encode("utf-8")
        return str(path)
    except UnicodeEncodeError:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None


class Classifier:
    """What every runtime's model shares: its contract, pixels to the input tensor, raw outputs to probabilities."""

    path: Path
    contract: Contract
    input_quant: "Quant"
    output_quant: "Quant"
    classes: int = 0
    meaning: str | None = None          # probabilities or logits: the contract's, else found on the first batch
    overrides: tuple[str, ...] = ()     # what the user's flags changed of the file's own contract, one note each
    file_origin: str = "file"           # where the file's own contract was read, before any flag

    def apply_flags(self, input_range: tuple[float, float] | None, labels: tuple[str, ...] | None) -> None:
        """The user's ``--input-range``/``--labels`` in place of what the contract says; what they override of the
        file's own contract kept as one note each (``overrides``)."""
        self.file_origin = self.contract.origin
        self.overrides = tuple(f"{self.path.name}: {note}" for note in self.contract.overridden(input_range, labels))
        self.contract = self.contract.with_flags(input_range, labels)

    def check_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != self.contract.shape:
            want = "x".join(map(str, self.contract.shape))
            raise EdgeCifarError(f"images have shape {images.shape}, {self.path.name} takes [N, {want.replace('x', ', ')}]")
        return images

    def input_tensor(self, images: np.ndarray) -> np.ndarray:
        """Pixels 0..255 as the tensor the file takes: its range, layout and quantization."""
        if self.contract.input_range is None:
            raise ModelError(f"{self.path}: its input range is unknown (a float input, and no edgecifar contract in "
                             "the file or beside it): pass --input-range LOW,HIGH, what pixels 0 and 255 must become "
                             "(e.g. 0,1 or -1,1; 0,255 for a model that rescales inside)")
        return self.input_quant.quantize(self.contract.to_input(self.check_images(images)))

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        """Raw outputs as probabilities: dequantized, and through a softmax when they are logits."""
        scores = self.output_quant.dequantize(raw).reshape(len(raw), -1)
        probs, self.meaning = contracts.probabilities(scores, self.meaning or self.contract.outputs)
        return probs

    def empty(self) -> np.ndarray:
        return np.zeros((0, self.classes), np.float32)


def file_contract(path: Path, shape, quant: "Quant", embedded: bytes | str | None) -> Contract:
    """The contract of ``path``: embedded in it, else recorded for it in the ``edgecifar.json`` beside it (same
    sha256), else what the file itself says (its shape; an integer input's range from its quantization)."""
    if embedded:
        return contracts.from_json(embedded, str(path))
    from edgecifar import manifest

    recorded = manifest.entry_for(path)
    if recorded is not None:
        found = contracts.from_manifest(recorded, str(path))
        if found is not None:
            return found
    return contracts.from_shape(path, shape, contracts.quantized_range(quant.scale, quant.zero_point, quant.dtype))


class TFLiteModel(Classifier):
    """A ``.tflite`` file in LiteRT (default) or the legacy ``tflite-runtime``."""

    def __init__(self, path: str | Path, threads: int = 1, runtime: str = "auto"):
        self.path = Path(path)
        self.runtime, module = _import_tflite(runtime)
        source = model_source(self.path)
        where = {"model_path" if isinstance(source, str) else "model_content": source}
        try:
            with native_stderr_filtered(without_tflite_info):
                self.interpreter = module.Interpreter(**where, num_threads=threads)
        except Exception as exc:  # the runtimes raise ValueError/RuntimeError with C++ messages
            raise ModelError(f"{self.path}: not a loadable TFLite model ({one_line(exc, limit=None)})") from None
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"{self.path}: expected 1 input and 1 output, found {len(inp)} and {len(out)}")
        self._in, self._out = inp[0], out[0]
        self.input_quant = Quant(*self._in["quantization"], np.dtype(self._in["dtype"]))
        self.output_quant = Quant(*self._out["quantization"], np.dtype(self._out["dtype"]))
        from edgecifar import tflite_graph

        embedded = tflite_graph.metadata(source if isinstance(source, bytes) else self.path, contracts.METADATA_NAME)
        self.contract = file_contract(self.path, list(self._in.get("shape_signature", self._in["shape"])),
                                      self.input_quant, embedded)
        self.classes = int(np.prod(self._out["shape"][1:]))
        self._batch = None

    @property
    def input_dtype(self) -> np.dtype:
        return self.input_quant.dtype

    def _ensure_batch(self, n: int) -> None:
        if self._batch != n:
            with runtime_errors(self.path, self.runtime, "prepare"), native_stderr_filtered(without_tflite_info):
                shape = self.contract.shape if self.contract.layout == "NHWC" else (self.contract.channels,
                                                                                     self.contract.height,
                                                                                     self.contract.width)
                self.interpreter.resize_tensor_input(self._in["index"], [n, *shape])
                self.interpreter.allocate_tensors()  # XNNPACK is created (and announced) here
            self._batch = n

    def predict(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        images = self.check_images(images)
        outs = []
        for i in range(0, len(images), batch):
            chunk = images[i:i + batch]
            self._ensure_batch(len(chunk))
            with runtime_errors(self.path, self.runtime, "run"):
                self.interpreter.set_tensor(self._in["index"], self.input_tensor(chunk))
                self.interpreter.invoke()
                outs.append(self.probabilities(self.interpreter.get_tensor(self._out["index"])))
        return np.concatenate(outs) if outs else self.empty()


class OnnxModel(Classifier):
    """An ``.onnx`` file in onnxruntime's CPU provider."""

    runtime = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 1):
        self.path = Path(path)
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(f"{self.path}: {RUNTIME_PACKAGES['.onnx'][1]}") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_source(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelError(f"{self.path}: not a loadable ONNX model ({one_line(exc, limit=None)})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected 1 input, found {len(inputs)}")
        self.input_name = inputs[0].name
        self.input_quant = self.output_quant = Quant(0.0, 0, np.dtype(np.float32))
        try:
            meta = self.session.get_modelmeta().custom_metadata_map or {}
        except Exception:
            meta = {}
        self.contract = file_contract(self.path, list(inputs[0].shape), self.input_quant,
                                      meta.get(contracts.METADATA_NAME))
        out_shape = self.session.get_outputs()[0].shape
        self.classes = int(np.prod([d for d in out_shape[1:] if isinstance(d, int)] or [0]))

    def predict(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        images = self.check_images(images)
        with runtime_errors(self.path, self.runtime, "run"):
            outs = [self.probabilities(np.asarray(self.session.run(None, {self.input_name: self.input_tensor(
                images[i:i + batch])})[0], np.float32)) for i in range(0, len(images), batch)]
        return np.concatenate(outs) if outs else self.empty()


@contextlib.contextmanager
def runtime_errors(path: Path, runtime: str, stage: str) -> Iterator[None]:
    """Whatever a runtime raises in the block (RuntimeError from ``allocate_tensors``/``invoke`` with pages of
    C++ text, ValueError, onnxruntime's own types) as one ModelError line naming the file."""
    try:
        yield
    except EdgeCifarError:
        raise
    except Exception as exc:
        raise ModelError(f"{path}: {RUNTIME_NAMES.get(runtime, runtime)} cannot {stage} this model "
                         f"({one_line(exc)})") from None


def _import_tflite(runtime: str):
    """Return (label, interpreter module) for ``runtime`` ('auto' tries LiteRT, then tflite-runtime)."""
    wanted = list(TFLITE_RUNTIMES) if runtime == "auto" else [runtime]
    for label in wanted:
        if label not in TFLITE_RUNTIMES:
            raise EdgeCifarError(f"unknown TFLite runtime {label!r}; known: {', '.join(TFLITE_RUNTIMES)}")
        try:
            return label, importlib.import_module(TFLITE_RUNTIMES[label])
        except ImportError:
            continue
    if runtime == "auto":
        raise EdgeCifarError("no TFLite runtime installed: pip install ai-edge-litert (or tflite-runtime)")
    others = [label for label, module in TFLITE_RUNTIMES.items()
              if label != runtime and importlib.util.find_spec(module.split(".")[0])]
    instead = f"; {', '.join(others)} is installed: use --runtime {others[0]} (or auto)" if others else ""
    raise EdgeCifarError(f"--runtime {runtime}: {PIP_NAMES[runtime]} is not installed "
                         f"(pip install {PIP_NAMES[runtime]}){instead}")


#: file suffix -> loader; the one place that decides which runtime runs which file.
LOADERS = {
    ".tflite": lambda path, threads, runtime: TFLiteModel(path, threads, runtime),
    ".onnx": lambda path, threads, runtime: OnnxModel(path, threads),
}


def locate(path: str | Path) -> Path:
    """A model argument as a file: the path itself, or a shipped file by the bare name ``edgecifar zoo``
    lists (``edge_tiny_int8.tflite``) when no such file is here."""
    path = Path(path)
    if path.exists() or path.name != str(path):
        return path
    from edgecifar import zoo

    shipped = zoo.ZOO_DIR / path.name
    return shipped if shipped.is_file() else path


def load(path: str | Path, threads: int = 1, runtime: str = "auto", input_range: tuple[float, float] | None = None,
         labels: tuple[str, ...] | None = None) -> Model:
    """Open an exported model file (or a zoo file by name) with the runtime its suffix calls for; ``input_range``
    and ``labels`` (the user's ``--input-range``, ``--labels``) replace what its contract says."""
    path = locate(path)
    if not path.is_file():
        raise ModelError(f"{path}: " + ("not a regular file" if path.exists() else "no such model file"))
    try:
        loader = LOADERS[path.suffix.lower()]
    except KeyError:
        raise ModelError(f"{path}: not a model file (expected {', '.join(LOADERS)})") from None
    model = loader(path, threads, runtime)
    model.apply_flags(input_range, labels)
    if model.contract.labels and model.classes and len(model.contract.labels) != model.classes:
        given = "--labels gives " if labels is not None else ""
        raise ModelError(f"{path}: {given}{len(model.contract.labels)} class names for {model.classes} outputs")
    return model
