"""Hostile model files through the console scripts: seeded mutations of the shipped .tflite and .onnx files
(byte flips, truncations, structural edits of the flatbuffer and the protobuf) must each end in exit code
0, 1 or 2, with no traceback, and a failure names its file. Bounded to about a minute; set
EDGECIFAR_FUZZ_FILES (default 90) and EDGECIFAR_FUZZ_SEED for a longer or another run, and run with -s to
see what each kind of mutation led to.

Also the home of the flatbuffer edits other tests use to make a model that crashes or fails LiteRT."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from edgecifar import zoo

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))  # the console script of this venv
TFLITE = zoo.ZOO_DIR / "edge_nano_kd160_int8.tflite"
ONNX = zoo.ZOO_DIR / "edge_micro_kd_int8.onnx"


# --------------------------------------------------------------------------- structural edits

def edited_tflite(data: bytes, edit: Callable[[object], None]) -> bytes:
    """``data`` with ``edit(model)`` applied to its object tree (LiteRT's own flatbuffer schema), repacked."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    edit(model)
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _quantized(model) -> list:
    return [t for t in model.subgraphs[0].tensors if t.quantization is not None and t.quantization.scale is not None]


def empty_quant_scales(model) -> None:
    """Quantized tensors without scales: LiteRT 2.x aborts (SIGABRT) while preparing such a file."""
    for tensor in _quantized(model):
        tensor.quantization.scale = []


def operator_input_out_of_range(model) -> None:
    """An operator reading tensor 9999 of a subgraph with a few dozen: allocate_tensors raises."""
    model.subgraphs[0].operators[-1].inputs[0] = 9999


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


#: name -> edit(model, rng): each makes a file wrong in a way a runtime must survive (or crash on).
TFLITE_EDITS: dict[str, Callable] = {
    "huge_shape": lambda m, r: setattr(_pick(r, m.subgraphs[0].tensors), "shape", [1, 2**30, 2**30, 3]),
    "negative_shape": lambda m, r: setattr(_pick(r, m.subgraphs[0].tensors), "shape", [-5, 32, 32, 3]),
    "buffer_out_of_range": lambda m, r: setattr(_pick(r, m.subgraphs[0].tensors), "buffer", 99_999),
    "tensor_type": lambda m, r: setattr(_pick(r, m.subgraphs[0].tensors), "type", int(r.integers(0, 18))),
    "operator_input": lambda m, r: _pick(r, m.subgraphs[0].operators).inputs.__setitem__(0, int(r.integers(-9, 9999))),
    "opcode_index": lambda m, r: setattr(_pick(r, m.subgraphs[0].operators), "opcodeIndex",
                                         int(r.integers(0, len(m.operatorCodes) + 3))),
    "no_options": lambda m, r: setattr(_pick(r, m.subgraphs[0].operators), "builtinOptions", None),
    "empty_quant_scales": lambda m, r: empty_quant_scales(m),
    "zero_point": lambda m, r: setattr(_pick(r, _quantized(m)).quantization, "zeroPoint",
                                       [int(r.integers(-10**6, 10**6))]),
    "no_buffers": lambda m, r: setattr(m, "buffers", []),
    "graph_input": lambda m, r: setattr(m.subgraphs[0], "inputs", [int(r.integers(-3, 9999))]),
}


def mutate_tflite(data: bytes, kind: str, rng) -> bytes:
    """One mutation of a .tflite file: raw bytes (flips, a truncation, the root table offset) or an edit."""
    raw = bytearray(data)
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            raw[int(rng.integers(len(raw)))] = int(rng.integers(256))
        return bytes(raw)
    if kind == "truncate":
        return bytes(raw[:int(rng.integers(0, len(raw)))])
    if kind == "root_offset":
        raw[0:4] = int(rng.integers(0, 2**32)).to_bytes(4, "little")
        return bytes(raw)
    return edited_tflite(data, lambda model: TFLITE_EDITS[kind](model, rng))


def _onnx_edit(data: bytes, edit: Callable[[object], None]) -> bytes:
    import onnx

    model = onnx.load_from_string(data)
    edit(model)
    return model.SerializeToString()


#: name -> edit(model, rng) of an ONNX ModelProto.
ONNX_EDITS: dict[str, Callable] = {
    "input_dims": lambda m, r: [setattr(d, "dim_value", int(r.integers(0, 2**31)))
                                for d in m.graph.input[0].type.tensor_type.shape.dim[1:2]],
    "drop_initializer": lambda m, r: m.graph.initializer.pop(int(r.integers(len(m.graph.initializer)))),
    "op_type": lambda m, r: setattr(_pick(r, m.graph.node), "op_type", _pick(r, ["Conv", "Relu", "Nope", "Gemm"])),
    "ir_version": lambda m, r: setattr(m, "ir_version", int(r.integers(0, 99))),
    "opset": lambda m, r: setattr(m.opset_import[0], "version", int(r.integers(1, 99))),
    "node_input": lambda m, r: _pick(r, list(m.graph.node)).input.__setitem__(0, "missing_tensor"),
}


def mutate_onnx(data: bytes, kind: str, rng) -> bytes:
    """One mutation of a .onnx file: flips in the protobuf header or anywhere, a truncation, or an edit."""
    raw = bytearray(data)
    if kind in ("header_flip", "flip"):
        span = 64 if kind == "header_flip" else len(raw)
        for _ in range(int(rng.integers(1, 9))):
            raw[int(rng.integers(span))] = int(rng.integers(256))
        return bytes(raw)
    if kind == "truncate":
        return bytes(raw[:int(rng.integers(0, len(raw)))])
    return _onnx_edit(data, lambda model: ONNX_EDITS[kind](model, rng))


TFLITE_KINDS = ("flip", "truncate", "root_offset", *TFLITE_EDITS)
ONNX_KINDS = ("header_flip", "flip", "truncate", *ONNX_EDITS)


def write_mutants(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` mutated files (about two thirds TFLite), named ``NNN_kind.suffix``, every kind in turn."""
    import onnx  # noqa: F401  (the structural ONNX edits need it; the dev install has it)

    rng = np.random.default_rng(seed)
    sources = {".tflite": (TFLITE.read_bytes(), TFLITE_KINDS, mutate_tflite),
               ".onnx": (ONNX.read_bytes(), ONNX_KINDS, mutate_onnx)}
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        suffix = ".onnx" if i % 3 == 2 else ".tflite"
        data, kinds, mutate = sources[suffix]
        kind = kinds[(i // (3 if suffix == ".onnx" else 1)) % len(kinds)]
        path = folder / f"{i:03d}_{kind}{suffix}"
        path.write_bytes(mutate(data, kind, rng))
        out.append(path)
    return out


# --------------------------------------------------------------------------- the fuzz run

def _kind(path: Path) -> str:
    return path.stem.split("_", 1)[1] + path.suffix


def _outcome(row: dict) -> str:
    """A row's outcome in a few words: ok, the crash signal, or the start of its error."""
    if row["status"] == "ok":
        return "ok"
    crash = re.search(r"crashed \((\w+)\)", row.get("error") or "")
    return f"crash {crash.group(1)}" if crash else "error"


def test_mutated_model_files_end_in_exit_0_1_or_2_without_traceback_and_each_failure_names_its_file(
        synthetic_archive, tmp_path):
    count = int(os.environ.get("EDGECIFAR_FUZZ_FILES", "90"))
    seed = int(os.environ.get("EDGECIFAR_FUZZ_SEED", "24"))
    files = write_mutants(tmp_path / "mutants", count, seed)
    report = tmp_path / "bench.json"
    proc = subprocess.run([EDGECIFAR, "bench", *map(str, files), "--data", str(synthetic_archive), "--limit", "20",
                           "--runs", "5", "--warmup", "1", "--timeout", "120", "--json", str(report)],
                          capture_output=True, text=True, timeout=60 + 20 * count)
    assert proc.returncode in (0, 1, 2), proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = json.loads(report.read_text())["rows"]
    assert sorted(r["file"] for r in rows) == sorted(map(str, files))
    for row in rows:
        if row["status"] != "ok":
            assert any(row["file"] in line and "error" in line for line in proc.stderr.splitlines()), row
    outcomes = Counter((_kind(Path(r["file"])), _outcome(r)) for r in rows)

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 40, 3), np.uint8)).save(image)
    first_of_kind = {_kind(f): f for f in reversed(files) if f.suffix == ".tflite"}
    for model in sorted(first_of_kind.values())[:8]:
        run = subprocess.run([EDGECIFAR, "predict", str(image), str(image), "--model", str(model)],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode in (0, 1, 2), (model, run.returncode, run.stderr[-1000:])
        assert "Traceback" not in run.stdout + run.stderr, model
        if run.returncode:
            errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
            assert errors and all(str(model) in line for line in errors), (model, run.stderr)
        outcomes[(_kind(model), f"predict exit {run.returncode}")] += 1
    print("\nfuzz outcomes (kind, outcome): count")
    for (kind, outcome), n in sorted(outcomes.items()):
        print(f"  {kind:28s} {outcome:18s} {n}")
