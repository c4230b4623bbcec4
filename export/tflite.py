"""TFLite files from a Keras model: fp32, fp16 weights, dynamic-range weights, full integer int8.

TensorFlow is imported inside the functions: importing the format table must stay cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecifar.errors import one_line
from edgecifar.export.job import ExportFailure, ExportJob, quiet

#: The int8 input must represent every pixel 0..255 exactly: real = 1.0 * (q - (-128)).
INT8_INPUT_QUANT = (1.0, -128)


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


def write_fp32(job: ExportJob, dest: Path) -> None:
    """Float32 as trained: the reference every other file is compared with."""
    dest.write_bytes(_convert(_converter(job)))


def write_fp16(job: ExportJob, dest: Path) -> None:
    """Float16 weights (half the size); computation stays float32 on CPUs."""
    import tensorflow as tf

    conv = _converter(job)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    dest.write_bytes(_convert(conv))


def write_dynamic(job: ExportJob, dest: Path) -> None:
    """Int8 weights, float activations quantized on the fly: no calibration data needed."""
    import tensorflow as tf

    conv = _converter(job)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    dest.write_bytes(_convert(conv))


def write_int8(job: ExportJob, dest: Path) -> None:
    """Full integer: int8 builtin ops only, int8 input and output, calibrated on real images.

    The calibration images contain a 0 and a 255 pixel, so the input range is exactly 0..255 and the
    converter picks scale 1.0, zero point -128; that is checked here and the format fails otherwise.
    """
    import tensorflow as tf

    conv = _converter(job)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([image[None]] for image in job.calibration)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    content = _convert(conv)
    check_int8_input(content)
    dest.write_bytes(content)


def check_int8_input(content: bytes) -> None:
    """Fail unless the file's input is int8 with scale 1.0 and zero point -128 exactly."""
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_content=content).get_input_details()[0]
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]) != np.int8 or (float(scale), int(zero_point)) != INT8_INPUT_QUANT:
        raise ExportFailure(f"int8 input quantization is {np.dtype(detail['dtype'])} scale {scale!r} zero point "
                            f"{zero_point}, expected int8 scale 1.0 zero point -128 (pixels 0-255 exactly)")

