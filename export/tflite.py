"""TFLite files from a Keras model: fp32, fp16 weights, dynamic-range weights, full integer int8, 16x8 (int16
activations, int8 weights), and the mixed int8 file export's quantization doctor chooses (export/doctor.py).

TensorFlow is imported inside the functions: importing the format table must stay cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecifar.errors import one_line
from edgecifar.export.job import ExportFailure, ExportJob, quiet

#: The int8 input must represent every pixel 0..255 exactly: real = 1.0 * (q - (-128)).
INT8_INPUT_QUANT = (1.0, -128)
#: Where the doctor leaves the chosen mixed file's bytes for :func:`write_mixed_int8` (ExportJob.cache).
MIXED_CACHE = "tflite_mixed_int8"


def _converter(job: ExportJob):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(job.model)


def _convert(converter) -> bytes:
    """Run the converter with its chatter (Keras' "Saved artifact at ...", MLIR notes) kept quiet."""
    try:
        with quiet():
            return converter.convert()
    except Exception as exc:  # the converter raises ConverterError/RuntimeError with MLIR dumps
        raise ExportFailure(f"TFLite conversion failed ({one_line(exc)})") from None


def write_with_contract(job: ExportJob, dest: Path, content: bytes) -> None:
    """The converted file with the job's contract in its metadata (edgecifar.contract), so that the file alone
    says its input, range and classes wherever it is copied."""
    from edgecifar import contract, tflite_graph

    dest.write_bytes(tflite_graph.with_metadata(content, contract.METADATA_NAME, job.contract().to_json().encode()))


def write_fp32(job: ExportJob, dest: Path) -> None:
    """Float32 as trained: the reference every other file is compared with."""
    write_with_contract(job, dest, _convert(_converter(job)))


def write_fp16(job: ExportJob, dest: Path) -> None:
    """Float16 weights (half the size); computation stays float32 on CPUs."""
    import tensorflow as tf

    conv = _converter(job)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    write_with_contract(job, dest, _convert(conv))


def write_dynamic(job: ExportJob, dest: Path) -> None:
    """Int8 weights, float activations quantized on the fly: no calibration data needed."""
    import tensorflow as tf

    conv = _converter(job)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    write_with_contract(job, dest, _convert(conv))


def integer_converter(job: ExportJob, activations: str = "int8"):
    """The converter of a full-integer file, calibrated on the job's images: int8 builtin ops with int8 input and
    output, or (``activations="int16"``) TFLite's 16x8 ops set, int16 activations with int8 weights, int16 input
    and output. The one recipe that write_int8, write_int16x8 and the doctor's QuantizationDebugger share, so the
    file the doctor explains is the file --int8 writes."""
    import tensorflow as tf

    ops, dtype = {"int8": (tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.int8),
                  "int16": (tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8, tf.int16),
                  }[activations]
    conv = _converter(job)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([image[None]] for image in job.calibration)
    conv.target_spec.supported_ops = [ops]
    conv.inference_input_type = dtype
    conv.inference_output_type = dtype
    return conv


def write_int8(job: ExportJob, dest: Path, float_ops: int = 0) -> None:
    """Full integer: int8 builtin ops only, int8 input and output, calibrated on real images.

    The calibration images contain a 0 and a 255 pixel, so the input range is exactly 0..255 and the
    converter picks scale 1.0, zero point -128; that is checked here and the format fails otherwise.

    ``float_ops`` N > 0 keeps the first N operators in float32 (see :func:`quantize_after`); 0 is the
    converter's own full-integer file. Its range is declared in the format table and checked once, when the
    options become an ExportConfig (export/pipeline.py ``check_options``).
    """
    conv = integer_converter(job)
    content = quantize_after(conv, float_ops) if float_ops else _convert(conv)
    check_int8_input(content)
    write_with_contract(job, dest, content)


def write_int16x8(job: ExportJob, dest: Path) -> None:
    """16x8: int16 activations, int8 weights (TFLite's ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``),
    int16 input and output, calibrated on the int8 format's images.

    Why int16 and not float at the edges: like the int8 file it is integer end to end, so TFLite Micro runs it
    as it is (no QUANTIZE of a float input on the chip). int16 activations are symmetric: the input's zero point
    is 0 and its scale 255/32767 (0..255 over 0..32767), checked here. Pixels 0..255 reach the file through the
    contract embedded in it (range 0..255); the quantization alone would say -255..255, which no pixel uses.
    """
    content = _convert(integer_converter(job, "int16"))
    check_int16_input(content)
    write_with_contract(job, dest, content)


def write_mixed_int8(job: ExportJob, dest: Path) -> None:
    """The file ``--max-drop`` chose (export/doctor.py): int8 with some layers, or its first operators, in float32;
    int8 input (scale 1, zero point -128, checked) and output. The doctor leaves its bytes in the job's cache; the
    format writes them with the contract, so they are validated and recorded as every other format's are."""
    content = job.cache.get(MIXED_CACHE)
    if content is None:
        raise ExportFailure("no mixed int8 file was chosen (export --max-drop chooses it)")
    check_int8_input(content)
    write_with_contract(job, dest, content)


def quantize_after(conv, float_ops: int) -> bytes:
    """Calibrate as ``conv`` would, then quantize every operator except the first ``float_ops`` in graph order.

    Why: the fine-tuned MobileNetV2 (mnv2_ft96) loses 1.35 points in int8 although no single layer is badly
    quantized (every activation's rmse/scale is 0.26-0.54, QuantizationDebugger): its first blocks amplify
    rounding error (the 8- and 16-channel bottlenecks at 48x48 carry values up to +-95). Int16 activations
    still lose 0.80 points and int8 weights alone (float activations) 0.85, so it is both, and early.
    Keeping the stem in float32 (13 operators: resize, scaling, Conv1 and blocks 0-2) brings the drop
    to 0.35 points (2,000 validation images) for about 1% more latency (LiteRT, 1 thread, batch 1: an interleaved
    probe and a bench run on an otherwise idle machine; a bench run beside a training measured 27%).
    TFLite Micro's int8-only kernels cannot run the float stem.
    The float operators run in XNNPACK's f32 kernels between a DEQUANTIZE and a QUANTIZE.

    This is what ``tf.lite.experimental.QuantizationDebugger`` does for selective quantization
    (``QuantizationDebugOptions(denylisted_nodes=...)``): the calibrate-only converter, then
    ``mlir_quantize`` with the operators' output tensors denylisted; the input and output stay int8.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tflite_convert

    conv._experimental_calibrate_only = True
    calibrated = _convert(conv)
    outputs = first_op_outputs(calibrated, float_ops)
    try:
        with quiet():
            return tflite_convert.mlir_quantize(calibrated, fully_quantize=True, input_data_type=tf.int8,
                                                output_data_type=tf.int8, denylisted_nodes=outputs)
    except Exception as exc:
        raise ExportFailure(f"int8 quantization with {float_ops} float operators failed ({one_line(exc)})") from None


def operator_outputs(content: bytes) -> list[tuple[str, ...]]:
    """Each operator's output tensor names, in graph (execution) order, from a .tflite flatbuffer."""
    from tensorflow.lite.tools import flatbuffer_utils

    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(content)).subgraphs[0]
    return [tuple(graph.tensors[i].name.decode() for i in op.outputs) for op in graph.operators]


def first_op_outputs(content: bytes, n: int) -> list[str]:
    """The output tensor names of the first ``n`` operators of a .tflite model, in graph (execution) order."""
    operators = operator_outputs(content)
    if n > len(operators):
        raise ExportFailure(f"--int8-float-ops {n}: the model has only {len(operators)} operators")
    return [t for outputs in operators[:n] for t in outputs]


def check_int16_input(content: bytes) -> None:
    """Fail unless the file's input is int16 with zero point 0 and a scale that keeps pixel 255 in range."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=content).get_input_details()[0]
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]) != np.int16 or int(zero_point) != 0 or not 0 < 255 / scale <= 32767.5:
        raise ExportFailure(f"16x8 input quantization is {np.dtype(detail['dtype'])} scale {scale!r} zero point "
                            f"{zero_point}, expected int16, zero point 0 and pixels 0-255 in range")


def check_int8_input(content: bytes) -> None:
    """Fail unless the file's input is int8 with scale 1.0 and zero point -128 exactly."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=content).get_input_details()[0]
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]) != np.int8 or (float(scale), int(zero_point)) != INT8_INPUT_QUANT:
        raise ExportFailure(f"int8 input quantization is {np.dtype(detail['dtype'])} scale {scale!r} zero point "
                            f"{zero_point}, expected int8 scale 1.0 zero point -128 (pixels 0-255 exactly)")

