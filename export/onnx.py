"""ONNX files: fp32 through tf2onnx, int8 through onnxruntime's static QDQ quantization.

Both take float32 pixels 0-255 on an input named ``pixels`` of the model's size with a dynamic batch, and carry
the labels and the input contract in ``metadata_props`` so a file explains itself without the manifest.

The int8 file answers the same on every x86-64 CPU. Without VNNI (AVX2, and AVX-512 without VNNI)
onnxruntime's int8 Conv/Gemm multiply with vpmaddubsw: two uint8 x int8 products (onnxruntime shifts
int8 activations to uint8, up to 255) summed into an int16 that saturates at 32,767. 8-bit weights
(|w| up to 127) overflow it; with |w| <= 64 (:data:`SAFE_WEIGHT`) they cannot. onnxruntime's quantization
guide says so and points to ``reduce_range`` (7-bit weights, [-64, 64]), which the int8 writer uses. Before
it, the zoo's edge_micro_kd_int8.onnx scored 82.2% on the test images on an AVX2 host and under QEMU's
emulated Haswell, against 87.6% with VNNI; tests/test_onnx_int8.py runs files on that emulation.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgecifar import __version__
from edgecifar.contract import METADATA_NAME
from edgecifar.errors import one_line
from edgecifar.export.job import INPUT_NAME, OUTPUT_NAME, ExportFailure, ExportJob, quiet

#: tf2onnx 1.17 writes opsets 13-18 that onnxruntime runs; 19+ fail. Pinned for reproducible files.
OPSET = 17
CALIBRATION_BATCH = 50
#: The largest int8 weight that vpmaddubsw cannot saturate with uint8 activations: 2 * 255 * 64 = 32,640.
SAFE_WEIGHT = 32767 // (2 * 255)
#: The operators onnxruntime runs as int8 matrix products (their input 1 is the weight, input 2 the bias).
MATMUL_OPS = ("Conv", "Gemm", "MatMul")


def fp32_graph(job: ExportJob):
    """The Keras model as an ONNX ModelProto (converted once per job, reused by the int8 writer)."""
    if "onnx_fp32" not in job.cache:
        import tensorflow as tf
        import tf2onnx

        spec = tf.TensorSpec([None, *job.shape], tf.float32, name=INPUT_NAME)
        fn = tf.function(lambda pixels: job.model(pixels, training=False), input_signature=[spec])
        try:
            with quiet():
                proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=OPSET,
                                                         custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])})
        except Exception as exc:
            raise ExportFailure(f"tf2onnx conversion failed ({one_line(exc)})") from None
        _rename_output(proto, OUTPUT_NAME)
        job.cache["onnx_fp32"] = proto
    return job.cache["onnx_fp32"]


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx 1.17 has no mapping for TF's Erfc, which exact GELU lowers to; ONNX has Erf: 1 - erf(x)."""
    from tf2onnx import utils

    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name("one"), np.array(1.0, dtype=np.float32))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def write_fp32(job: ExportJob, dest: Path) -> None:
    """Float32 ONNX, agrees with Keras to about 1e-5."""
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(fp32_graph(job))
    _save(proto, dest, job, "fp32")


@contextlib.contextmanager
def _working_directory(path: str):
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


class Reader:
    """Images in batches, as onnxruntime's quantize_static and qdq_loss_debug read them: a CalibrationDataReader
    (onnxruntime's base class counts any class with ``get_next`` as one) that also iterates."""

    def __init__(self, images: np.ndarray):
        self._batches = iter([images[i:i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)])

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch.astype(np.float32)}

    def __iter__(self):  # qdq_loss_debug.collect_activations iterates its reader
        return iter(self.get_next, None)


def prepare(job: ExportJob, folder: Path) -> Path:
    """The fp32 graph after onnxruntime's quantization pre-processing (shape inference, fusions), in ``folder``:
    what static quantization, and the doctor's float activations, start from."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, prepared = folder / "fp32.onnx", folder / "prepared.onnx"
    onnx.save(fp32_graph(job), fp32)
    try:
        # onnxruntime's shape inference drops scratch files (sym_shape_infer_temp.onnx, *.data) in the
        # working directory: give it ours, not the user's.
        with quiet(), _working_directory(str(folder)):
            quant_pre_process(str(fp32), str(prepared))
    except Exception as exc:
        raise ExportFailure(f"onnxruntime quantization failed ({one_line(exc)})") from None
    return prepared


def quantize(prepared: Path, dest: Path, images: np.ndarray, exclude: tuple[str, ...] = ()) -> None:
    """Static QDQ int8 of a prepared graph on ``images``: per-channel QInt8 weights in reduce_range's 7 bits,
    QInt8 activations; the nodes named in ``exclude`` stay float (onnxruntime's ``nodes_to_exclude``)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    try:
        with quiet(), _working_directory(str(prepared.parent)):
            quantize_static(str(prepared), str(dest), Reader(images), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude))
    except Exception as exc:
        raise ExportFailure(f"onnxruntime quantization failed ({one_line(exc)})") from None


def write_int8(job: ExportJob, dest: Path) -> None:
    """Static QDQ int8 (per-channel QInt8 weights, QInt8 activations) on the calibration images, the weights
    in reduce_range's 7 bits so that the file answers the same with and without VNNI (module docstring)."""
    dest = Path(dest).resolve()
    with tempfile.TemporaryDirectory(prefix="edgecifar-onnx-") as tmp:
        quantize(prepare(job, Path(tmp)), dest, job.calibration)
    save_int8(dest, dest, job)


def save_int8(quantized: Path, dest: Path, job: ExportJob) -> None:
    """A quantized graph as an int8 file: refused when a weight could saturate (never ship a CPU-dependent file),
    else saved with the job's metadata."""
    import onnx

    proto = onnx.load(quantized)
    beyond = saturating_weights(proto)
    if beyond:  # reduce_range makes this impossible, unless onnxruntime changes it: never ship a CPU-dependent file
        raise ExportFailure(f"int8 weights beyond +-{SAFE_WEIGHT}: {', '.join(beyond)}")
    _save(proto, dest, job, "int8")


def _weight_dequantizers(proto) -> list[tuple[Any, Any | None]]:
    """(weight DequantizeLinear, bias DequantizeLinear or None) of each Conv/Gemm/MatMul whose weight is a
    quantized initializer."""
    init = {i.name for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    pairs = []
    for node in proto.graph.node:
        if node.op_type not in MATMUL_OPS or len(node.input) < 2:
            continue
        weight = producer.get(node.input[1])
        if weight is not None and weight.input[0] in init:
            bias = producer.get(node.input[2]) if len(node.input) > 2 else None
            pairs.append((weight, bias if bias is not None and bias.input[0] in init else None))
    return pairs


def saturating_weights(proto) -> list[str]:
    """The int8 weights that a CPU without VNNI can overflow on (some |w| > :data:`SAFE_WEIGHT`); empty for
    a file whose answers do not depend on the CPU."""
    from onnx import numpy_helper

    init = {i.name: i for i in proto.graph.initializer}
    out = []
    for weight, _ in _weight_dequantizers(proto):
        q = numpy_helper.to_array(init[weight.input[0]])
        if q.dtype == np.int8 and np.abs(q.astype(np.int32)).max(initial=0) > SAFE_WEIGHT:
            out.append(weight.input[0])
    return out


def narrow_weights(proto) -> int:
    """Re-quantize, in place, every int8 weight channel beyond +-SAFE_WEIGHT to it, as reduce_range would have:
    scale s' = s * max|q| / 64, q' = round(q * 64 / max|q|); its int32 bias follows the new scale (bias scale
    = input scale x weight scale). For files whose float weights are gone (a shipped QDQ file). Returns the
    number of weights changed."""
    from onnx import numpy_helper

    init = {i.name: i for i in proto.graph.initializer}
    changed = 0
    for weight, bias in _weight_dequantizers(proto):
        q = numpy_helper.to_array(init[weight.input[0]]).astype(np.int64)
        scale = numpy_helper.to_array(init[weight.input[1]])
        axis = _axis(weight, q.ndim) if scale.ndim else None
        peak = np.abs(q).max(axis=tuple(d for d in range(q.ndim) if d != axis), keepdims=True)
        ratio = np.where(peak > SAFE_WEIGHT, SAFE_WEIGHT / np.maximum(peak, 1), 1.0)  # per channel, <= 1
        if np.all(ratio == 1.0):
            continue
        _replace(init[weight.input[0]], np.clip(np.round(q * ratio), -SAFE_WEIGHT, SAFE_WEIGHT).astype(np.int8))
        _replace(init[weight.input[1]], (scale / ratio.reshape(scale.shape)).astype(scale.dtype))
        if bias is not None:
            qb = numpy_helper.to_array(init[bias.input[0]]).astype(np.int64)
            bias_scale = numpy_helper.to_array(init[bias.input[1]])
            r = ratio.reshape(bias_scale.shape)
            _replace(init[bias.input[0]], np.round(qb * r).astype(np.int32))
            _replace(init[bias.input[1]], (bias_scale / r).astype(bias_scale.dtype))
        changed += 1
    return changed


def _axis(dequantize, ndim: int) -> int:
    """The per-channel axis of a DequantizeLinear (ONNX default 1), as a non-negative index."""
    axis = next((a.i for a in dequantize.attribute if a.name == "axis"), 1)
    return axis % ndim


def _replace(tensor, values: np.ndarray) -> None:
    """Overwrite an initializer's values, keeping its name."""
    from onnx import numpy_helper

    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def metadata(job: ExportJob, precision: str) -> dict[str, str]:
    """What a reader of the file needs besides the graph: labels, input contract, provenance."""
    return {
        "labels": json.dumps(list(job.labels)),
        "input": json.dumps({**job.input_contract(), "dtype": "float32"}),
        "output": json.dumps({"name": OUTPUT_NAME, "meaning": "probabilities", "shape": [-1, job.classes]}),
        "model": job.name,
        METADATA_NAME: job.contract().to_json(),
        "precision": precision,
        "edgecifar_version": __version__,
    }


def _save(proto, dest: Path, job: ExportJob, precision: str) -> None:
    import onnx

    del proto.metadata_props[:]
    for key, value in metadata(job, precision).items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "edgecifar"
    proto.producer_version = __version__
    onnx.save(proto, dest)


def _rename_output(proto, new: str) -> None:
    """tf2onnx names the output after the TF tensor (``Identity:0``); give it the contract's name."""
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
    proto.graph.output[0].name = new

