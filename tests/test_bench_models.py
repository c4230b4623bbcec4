"""Real model files for the bench, predict and remote tests, converted here from the ``trained_run``
fixture's Keras model (TFLite fp32, full-int8 TFLite, ONNX fp32), plus broken ones. Conversion uses
TensorFlow directly, not the export stage, so these tests do not depend on it.

The files are made once per test session (cached under pytest's base temp folder); other test modules
import the ``bench_models`` fixture from here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import separable_images

GOOD = ("tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx")


def _convert(keras_path: Path, out: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    model = keras.models.load_model(keras_path, compile=False)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tiny_fp32.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    calib, _ = separable_images(100, seed=7)

    def representative():
        for img in calib:
            yield [img[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (out / "tiny_int8.tflite").write_bytes(conv.convert())

    import tf2onnx

    proto, _ = tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32,
                                                                                name="pixels")], opset=17)
    (out / "tiny_fp32.onnx").write_bytes(proto.SerializeToString())

    # A valid TFLite file with the wrong input: 28x28 greyscale.
    wrong = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    (out / "wrong_shape.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(wrong).convert())

    params = int(model.count_params())
    manifest = {"source": {"model": "baseline", "parameters": params, "macs": 1_234_567},
                "files": [{"file": name, "model": "baseline", "format": name.rsplit(".", 1)[1],
                           "precision": "int8" if "int8" in name else "fp32", "parameters": params,
                           "macs": 1_234_567, "bytes": (out / name).stat().st_size,
                           "labels": list(keras_labels()), "validation": {"accuracy": 0.9, "images": 100}}
                          for name in GOOD]}
    (out / "edgecifar.json").write_text(json.dumps(manifest, indent=2))


def keras_labels():
    from edgecifar import LABELS

    return LABELS


@pytest.fixture(scope="session")
def bench_models(trained_run, tmp_path_factory) -> Path:
    """A folder with tiny_fp32.tflite, tiny_int8.tflite, tiny_fp32.onnx, wrong_shape.tflite and a manifest."""
    out = tmp_path_factory.getbasetemp() / "bench-models"
    if not (out / "edgecifar.json").exists():
        _convert(trained_run / "model.keras", out)
    return out


@pytest.fixture(scope="session")
def broken_models(tmp_path_factory, bench_models) -> Path:
    """A folder with a truncated .tflite, random-bytes .tflite and .onnx, and a file of the wrong type."""
    out = tmp_path_factory.getbasetemp() / "bench-broken"
    if not out.exists():
        out.mkdir()
        good = (bench_models / "tiny_fp32.tflite").read_bytes()
        (out / "truncated.tflite").write_bytes(good[: len(good) // 3])
        rng = np.random.default_rng(0)
        (out / "random.tflite").write_bytes(rng.bytes(4096))
        (out / "random.onnx").write_bytes(rng.bytes(4096))
    return out


def test_converted_files_load_in_the_runtime_without_tensorflow(bench_models):
    code = ("import sys, numpy as np; from edgecifar import runtime as rt\n"
            f"for n in {GOOD!r}:\n"
            f"    p = rt.load({str(bench_models)!r} + '/' + n).predict(np.zeros((2, 32, 32, 3), np.uint8))\n"
            "    assert p.shape == (2, 10), p.shape\n"
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
