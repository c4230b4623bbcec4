"""ONNX files: fp32 through tf2onnx, int8 through onnxruntime's static QDQ quantization.

Both take float32 pixels 0-255 on an input named ``pixels`` with a dynamic batch, and carry the labels
and the input contract in ``metadata_props`` so a file explains itself without the manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from edgecifar import __version__
from edgecifar.errors import one_line
from edgecifar.export.job import INPUT_NAME, OUTPUT_NAME, ExportFailure, ExportJob, quiet

#: tf2onnx 1.17 writes opsets 13-18 that onnxruntime runs; 19+ fail. Pinned for reproducible files.
OPSET = 17
CALIBRATION_BATCH = 50


def fp32_graph(job: ExportJob):
    """The Keras model as an ONNX ModelProto (converted once per job, reused by the int8 writer)."""
    if "onnx_fp32" not in job.cache:
        import tensorflow as tf
        import tf2onnx

        spec = tf.TensorSpec([None, 32, 32, 3], tf.float32, name=INPUT_NAME)
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


def write_int8(job: ExportJob, dest: Path) -> None:
    """Static QDQ int8 (per-channel QInt8 weights, QInt8 activations) on the calibration images."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, images: np.ndarray):
            self._batches = iter([images[i:i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)])

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch.astype(np.float32)}

    dest = Path(dest).resolve()
    with tempfile.TemporaryDirectory(prefix="edgecifar-onnx-") as tmp:
        fp32, prepared = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(fp32_graph(job), fp32)
        try:
            # onnxruntime's shape inference drops scratch files (sym_shape_infer_temp.onnx, *.data) in the
            # working directory: give it ours, not the user's.
            with quiet(), _working_directory(tmp):
                quant_pre_process(str(fp32), str(prepared))
                quantize_static(str(prepared), str(dest), Reader(job.calibration), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise ExportFailure(f"onnxruntime quantization failed ({one_line(exc)})") from None
    _save(onnx.load(dest), dest, job, "int8")


def metadata(job: ExportJob, precision: str) -> dict[str, str]:
    """What a reader of the file needs besides the graph: labels, input contract, provenance."""
    return {
        "labels": json.dumps(list(job.labels)),
        "input": json.dumps({**job.input_contract(), "dtype": "float32"}),
        "output": json.dumps({"name": OUTPUT_NAME, "meaning": "probabilities", "shape": [-1, len(job.labels)]}),
        "model": job.name,
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

