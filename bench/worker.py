"""Measure one model file in this process and print one JSON line. Runtime-only: no TensorFlow, no rich.

    python -m edgecifar.bench.worker FILE --images TEST.npz [--threads 1] [--runs 200] [--warmup 20]
                                          [--blocks 5] [--batch 32] [--runtime auto] [--no-accuracy]

This is what the bench runs in a fresh process per file (locally, or on a board over ssh), so a
crash, a leak or the memory high-water mark of one file never touches another. ``TEST.npz`` holds
``x`` (uint8 [N, 32, 32, 3]) and ``y`` (int [N]).

What is measured:
- accuracy: ``model.predict`` (the runtime plus the file's own input/output quantization) over all N
  (``--no-accuracy`` skips it: the bench's later rounds, whose first round has it; it is deterministic);
- latency at batch 1: the runtime's own call (``Interpreter.invoke`` / ``InferenceSession.run``) on a
  real test image already placed in the input tensor, after ``--warmup`` calls; ``--runs`` calls in
  ``--blocks`` consecutive blocks (see :mod:`edgecifar.bench.stats`);
- throughput at batch ``--batch``: the same call on a batch of real images, in images per second;
- load time: opening the file and preparing the interpreter/session;
- peak resident memory: VmHWM from /proc/self/status (ru_maxrss where /proc is absent) of this process.

Under an emulated CPU (QEMU user mode: an ARM64 root on an x86 machine, see bench/board/arm64.sh) an
emulated core's timing says nothing about a real one, so nothing is timed: latency, throughput, load time
and memory stay empty and the result's ``note`` says why. Accuracy and per-image predictions are measured.

Every failure becomes ``{"status": "error", "error": "<one line>"}`` and exit code 1; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from edgecifar.errors import one_line
from edgecifar.workers import PREFIX

#: Packages whose versions decide a result (kernels differ between releases), reported when installed.
VERSIONED = ("ai-edge-litert", "tflite-runtime", "onnxruntime", "numpy")


# --------------------------------------------------------------------------- the result's shape

def device_result(runtime: str, *, images: int = 0, correct: int = 0, latency: dict | None = None,
                  load_ms: float = float("nan"), peak_rss_mb: float = float("nan"), status: str = "ok",
                  error: str | None = None, note: str | None = None, predictions: list[int] | None = None,
                  figures: dict | None = None) -> dict:
    """A result in the worker's shape for a device that does not run the worker (android, mcu).

    What the device did not measure is NaN (so reports show "–"); accuracy and its interval come from
    ``correct``/``images``; ``figures`` are the device's own row fields (e.g. the mcu's arena).
    """
    from edgecifar.metrics import wilson_interval

    nan = float("nan")
    low, high = wilson_interval(correct, images) if images else (nan, nan)
    lat = {"runs": 0, "blocks": 0, "median_ms": nan, "p90_ms": nan, "p99_ms": nan, "mean_ms": nan, "min_ms": nan,
           "spread_lo_ms": nan, "spread_hi_ms": nan, "iqr_ms": nan, **(latency or {})}
    out = {"status": status, "runtime": runtime, "images": images, "correct": correct,
           "accuracy": correct / images if images else nan, "ci_low": low, "ci_high": high, "latency": lat,
           "throughput_ips": nan, "load_ms": load_ms, "peak_rss_mb": peak_rss_mb}
    if error is not None:
        out["error"] = error
    if note:
        out["note"] = note
    if predictions is not None:
        out["predictions"] = predictions
    if figures:
        out["figures"] = figures
    return out


# --------------------------------------------------------------------------- what is measured

def _parent_exe() -> str:
    try:
        return os.readlink(f"/proc/{os.getppid()}/exe")
    except OSError:
        return ""


def emulation(machine: str | None = None, environ=None, binfmt_dir: str = "/proc/sys/fs/binfmt_misc",
              parent_exe: str | None = None) -> str | None:
    """How this process's CPU is emulated (e.g. ``"QEMU user mode (parent /usr/bin/qemu-aarch64-static,
    QEMU_CPU=cortex-a76)"``), or None on a real CPU.

    Evidence, any of: an enabled binfmt_misc entry ``qemu-<machine>`` (the kernel hands this machine's own
    binaries to QEMU, which no native board does for its own architecture); a parent process whose executable
    is QEMU (QEMU hides itself from its own process only: a shell or sshd it runs shows it); ``QEMU_CPU`` in
    the environment (QEMU's CPU model; bench/board/arm64.sh sets it for every ssh session)."""
    machine = machine or platform.machine()
    environ = os.environ if environ is None else environ
    parent_exe = _parent_exe() if parent_exe is None else parent_exe
    evidence = []
    try:
        if (Path(binfmt_dir) / f"qemu-{machine}").read_text().startswith("enabled"):
            evidence.append(f"binfmt qemu-{machine}")
    except OSError:
        pass
    if "qemu" in Path(parent_exe).name:
        evidence.append(f"parent {parent_exe}")
    if environ.get("QEMU_CPU"):
        evidence.append(f"QEMU_CPU={environ['QEMU_CPU']}")
    return f"QEMU user mode ({', '.join(evidence)})" if evidence else None


def versions() -> dict[str, str]:
    """``{distribution: version}`` for the installed packages of :data:`VERSIONED` (no imports)."""
    from importlib import metadata

    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB: VmHWM from /proc, else ru_maxrss (KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


# File-name endings export writes (export/formats.py) and common spellings elsewhere, compound ones first:
# ``x_mixed_int8`` is mixed before it is int8.
PRECISION_NAMES = (("mixed_int8", "mixed_int8"), ("int16x8", "int16x8"), ("16x8", "int16x8"), ("int8", "int8"),
                   ("uint8", "int8"), ("fp16", "fp16"), ("float16", "fp16"), ("dynamic", "dynamic"),
                   ("drq", "dynamic"), ("fp32", "fp32"), ("float32", "fp32"))


def precision_from_name(path: Path) -> str | None:
    """The precision a file's name says (``x_int8.tflite``, ``x_int16x8.tflite``, ``x_mixed_int8.tflite``),
    else None. A board gets a copy under a name edgecifar makes (``devices.remote_name``), so the bench asks
    this of the user's name."""
    name = "_" + Path(path).stem.lower().replace("-", "_").replace(".", "_").replace(" ", "_") + "_"
    for token, precision in PRECISION_NAMES:   # whole tokens only: checkpoint8 is not int8
        if f"_{token}_" in name:
            return precision
    return None


def guess_precision(model, path: Path) -> str:
    """fp32 / fp16 / dynamic / int8 / int16x8 / mixed_int8 from the file name, else from the file's tensor
    types."""
    named = precision_from_name(path)
    if named:
        return named
    interpreter = getattr(model, "interpreter", None)
    if interpreter is not None:
        if np.dtype(model.input_dtype).kind in "iu":
            return "int16x8" if np.dtype(model.input_dtype).itemsize == 2 else "int8"
        kinds = {np.dtype(t["dtype"]) for t in interpreter.get_tensor_details()}
        if np.dtype(np.float16) in kinds:
            return "fp16"
        if np.dtype(np.int8) in kinds:
            return "dynamic"
        return "fp32"
    try:  # ONNX: look at the initializers when the optional onnx package is there
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        types = {init.data_type for init in graph.initializer}
        if onnx.TensorProto.INT8 in types or onnx.TensorProto.UINT8 in types:
            return "int8"
        if onnx.TensorProto.FLOAT16 in types:
            return "fp16"
    except Exception:
        pass
    return "fp32"


def invoker(model, images: np.ndarray) -> Callable[[], object]:
    """A zero-argument call that runs one inference of ``images`` (at the model's input size) with the input
    already in place."""
    interpreter = getattr(model, "interpreter", None)
    if interpreter is not None:  # TFLite: resize once, set the tensor once, time invoke() alone
        model._ensure_batch(len(images))
        interpreter.set_tensor(model._in["index"], model.input_tensor(images))
        return interpreter.invoke
    session = getattr(model, "session", None)
    if session is not None:  # onnxruntime: the feed dict is built once
        feed = {model.input_name: model.input_tensor(images)}
        return lambda: session.run(None, feed)
    return lambda: model.predict(images)


def time_calls(call: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Per-call wall times in seconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    times = []
    clock = time.perf_counter
    for _ in range(runs):
        t0 = clock()
        call()
        times.append(clock() - t0)
    return times


def accuracy_figures(model, images: np.ndarray, labels: np.ndarray, classes: np.ndarray | None = None) -> dict:
    """Top-1 over all images with its 95% interval, each image's prediction (as a class of the data: ``classes``
    maps the model's outputs to the data's classes, -1 for one the data lacks) and its outputs' digest."""
    from edgecifar.metrics import wilson_interval

    probs = model.predict(images)
    predicted = np.argmax(probs, axis=1)
    if classes is not None:
        predicted = classes[predicted]
    correct = int(np.sum(predicted == labels))
    low, high = wilson_interval(correct, len(labels))
    return {
        "images": int(len(labels)),
        "correct": correct,
        "accuracy": correct / len(labels) if len(labels) else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "predictions": predicted.astype(int).tolist(),
        # Each image's output values, hashed (CRC-32): equal on two machines = bit-identical outputs.
        "output_digests": [zlib.crc32(row.tobytes()) for row in np.ascontiguousarray(probs, dtype=np.float32)],
    }


def measure(path: Path, images: np.ndarray, labels: np.ndarray, threads: int = 1, runs: int = 200,
            warmup: int = 20, blocks: int = 5, batch: int = 32, runtime: str = "auto", timed: bool = True,
            accuracy: bool = True, names: tuple[str, ...] | None = None, model_labels: tuple[str, ...] | None = None,
            input_range: tuple[float, float] | None = None) -> dict:
    """Everything the bench reports about one file at one thread count (raises on a bad file).

    ``timed=False`` (an emulated CPU): accuracy and predictions only; no timing and no memory figures.
    ``accuracy=False`` (a later bench round): no accuracy pass, so a round costs its timing alone.
    The images are fitted to the file's input (edgecifar.contract), its outputs matched to the data's classes
    (``names``) by name, or by index when it names none; ``model_labels`` and ``input_range`` are the user's."""
    from edgecifar import LABELS, contract
    from edgecifar import runtime as rt
    from edgecifar.bench import stats

    t0 = time.perf_counter()
    model = rt.load(path, threads=threads, runtime=runtime, input_range=input_range, labels=model_labels)
    images = model.contract.fit(images)
    invoke_one = invoker(model, images[:1])  # includes allocate_tensors: part of getting ready
    load_s = time.perf_counter() - t0
    classes, note = contract.match_classes(model.contract.labels, model.classes, tuple(names or LABELS), str(path))

    result = {"status": "ok", "runtime": model.runtime, "threads": threads,
              **(accuracy_figures(model, images, labels, classes) if accuracy else {})}
    result["contract"] = {"shape": list(model.contract.shape), "layout": model.contract.layout,
                          "input_range": list(model.contract.input_range or ()), "origin": model.contract.origin,
                          "outputs": model.meaning or model.contract.outputs}
    notes = [*model.overrides, *([note] if note else [])]
    if model.meaning == "logits" and model.contract.outputs != "logits":
        notes.append(f"{path.name}: its outputs are not probabilities (logits): shown through a softmax")
    if notes:
        result["note"] = "; ".join(notes)
    if not timed:
        nan = float("nan")
        return {**result, "precision_guess": guess_precision(model, path), "latency": None, "batch": batch,
                "throughput_ips": nan, "load_ms": nan, "peak_rss_mb": nan}

    invoke_one = invoker(model, images[:1])  # again: predict() resized the input to its own batches
    lat = stats.summarize(time_calls(invoke_one, runs, warmup), blocks)
    big = images[:batch] if len(images) >= batch else np.resize(images, (batch, *images.shape[1:]))
    batch_runs = max(5, runs // 10)
    batch_times = time_calls(invoker(model, big), batch_runs, max(1, warmup // 10))
    peak = peak_rss_mb()  # before guess_precision, which may load the optional onnx package
    return {
        **result,
        "precision_guess": guess_precision(model, path),
        "latency": lat.as_dict(),
        "batch": batch,
        "throughput_ips": stats.throughput(batch, batch_times, blocks),
        "load_ms": load_s * 1e3,
        "peak_rss_mb": peak,
    }


def _missing_runtime(file: str) -> str | None:
    """How to install a runtime for ``file`` when none is installed here (so a caller can tell a board that
    lacks onnxruntime from a broken file), else None."""
    from edgecifar.runtime import RUNTIME_PACKAGES, missing_runtime

    return missing_runtime(file) if Path(file).suffix.lower() in RUNTIME_PACKAGES else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgecifar.bench.worker", description=__doc__.split("\n")[0])
    parser.add_argument("file")
    parser.add_argument("--images", required=True, help=".npz with x (uint8 NHWC) and y")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--no-accuracy", action="store_true", help="time only (a later bench round)")
    args = parser.parse_args(argv)

    emulated = emulation()
    result: dict = {"file": args.file, "threads": args.threads, "host": platform.node(),
                    "machine": platform.machine(), "emulated": emulated, "python": platform.python_version(),
                    "versions": versions()}
    if emulated:
        result["note"] = f"latency not reported: emulated CPU ({emulated}); nor load time, throughput or memory"
    code = 0
    try:
        with np.load(args.images) as npz:   # names, model_labels, input_range: absent in older benches' files
            images, labels = npz["x"], npz["y"]
            names = tuple(str(n) for n in npz["names"]) if "names" in npz.files else None
            model_labels = tuple(str(n) for n in npz["model_labels"]) if "model_labels" in npz.files else ()
            input_range = tuple(float(v) for v in npz["input_range"]) if "input_range" in npz.files else ()
        measured = measure(Path(args.file), images, labels, args.threads, args.runs, args.warmup, args.blocks,
                           args.batch, args.runtime, timed=not emulated, accuracy=not args.no_accuracy, names=names,
                           model_labels=model_labels or None, input_range=input_range or None)
        if result.get("note") and measured.get("note"):
            measured["note"] = f"{result['note']}; {measured['note']}"
        result.update(measured)
    except Exception as exc:  # one line for the report, never a traceback
        result.update(status="error", error=one_line(exc, limit=None), peak_rss_mb=peak_rss_mb())
        result["missing_runtime"] = _missing_runtime(args.file)
        code = 1
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    sys.stdout.write(PREFIX + json.dumps(result, allow_nan=True) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
