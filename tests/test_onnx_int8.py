"""ONNX int8 files answer the same on every x86-64 CPU: their int8 weights lie within +-64, where the int16 sums
of CPUs without VNNI (vpmaddubsw: two uint8 x int8 products) cannot saturate (export/onnx.py). Proved on any host
by the weights themselves, and, where ``qemu-x86_64`` is installed, by running the files on an emulated AVX2 CPU
without VNNI (QEMU's Haswell) against this one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import separable_images
from edgecifar import zoo
from edgecifar.export.onnx import SAFE_WEIGHT, narrow_weights, saturating_weights

onnx = pytest.importorskip("onnx")
QEMU = shutil.which("qemu-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (apt-get install qemu-user)")


@pytest.fixture(scope="module")
def small_convnet(tmp_path_factory):
    """An untrained convnet written by the ONNX writers: fp32, and int8 as exported; plus its images."""
    import keras

    from edgecifar.export.calibration import full_range
    from edgecifar.export.job import ExportJob
    from edgecifar.export.onnx import write_fp32, write_int8
    from edgecifar.models.layers import classifier, pixels_input

    keras.utils.set_random_seed(0)
    inp = pixels_input()
    x = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(inp)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    model = keras.Model(inp, classifier(keras.layers.GlobalAveragePooling2D()(x)))
    images, _ = separable_images(120, seed=5)
    job = ExportJob(model, "small", full_range(images[:60]))
    out = tmp_path_factory.mktemp("onnx-int8")
    write_fp32(job, out / "small_fp32.onnx")
    write_int8(job, out / "small_int8.onnx")
    return out, images[60:]


def eight_bit_copy(fp32: Path, calibration: np.ndarray, dest: Path) -> Path:
    """What the int8 writer made before reduce_range: the same quantization with 8-bit weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixels": calibration.astype(np.float32)}])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return dest


def matmuls(proto) -> list[tuple[str, str, str | None]]:
    """(int8 weight, its scale, its bias's scale or None) of each Conv/Gemm/MatMul, by initializer name."""
    made = {o: n for n in proto.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    found = []
    for n in proto.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in made:
            weight, bias = made[n.input[1]], made.get(n.input[2]) if len(n.input) > 2 else None
            found.append((weight.input[0], weight.input[1], bias.input[1] if bias is not None else None))
    return found


def initializers(proto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


SCORE = textwrap.dedent("""
    import sys, numpy as np, onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
    np.save(sys.argv[3], session.run(None, {"pixels": np.load(sys.argv[2]).astype(np.float32)})[0])
""")


def scores(path: Path, images: np.ndarray, work: Path, cpu: str | None = None) -> np.ndarray:
    """onnxruntime's probabilities for ``images``, on this CPU or on QEMU's emulation of ``cpu``."""
    np.save(work / "x.npy", images)
    (work / "score.py").write_text(SCORE)
    out = work / f"scores-{cpu or 'native'}.npy"
    prefix = [QEMU, "-cpu", cpu] if cpu else []
    proc = subprocess.run([*prefix, sys.executable, str(work / "score.py"), str(path), str(work / "x.npy"), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(out)


def test_exported_onnx_int8_weights_lie_within_the_range_no_cpu_saturates(small_convnet):
    out, _ = small_convnet
    proto = onnx.load(out / "small_int8.onnx")
    init = initializers(proto)
    found = [init[weight] for weight, _, _ in matmuls(proto)]
    assert len(found) == 4 and all(q.dtype == np.int8 for q in found)  # three convolutions and the classifier
    assert max(int(np.abs(q.astype(int)).max()) for q in found) == SAFE_WEIGHT == 64
    assert saturating_weights(proto) == []


def test_an_eight_bit_file_is_found_saturating_and_narrowing_fixes_it_within_half_a_step(small_convnet, tmp_path):
    out, images = small_convnet
    proto = onnx.load(eight_bit_copy(out / "small_fp32.onnx", images, tmp_path / "8bit.onnx"))
    before = initializers(proto)
    assert len(saturating_weights(proto)) == 4
    assert narrow_weights(proto) == 4 and saturating_weights(proto) == []
    after = initializers(proto)
    for weight, scale, bias_scale in matmuls(proto):
        q = after[weight]
        axis = 0 if q.ndim == 4 else 1  # Conv weights per output channel (axis 0), Gemm's per column (axis 1)
        shape = [-1 if d == axis else 1 for d in range(q.ndim)]
        old = before[weight].astype(np.float64) * before[scale].reshape(shape)
        new = q.astype(np.float64) * after[scale].reshape(shape)
        assert np.all(np.abs(new - old) <= after[scale].reshape(shape) / 2 * (1 + 1e-6)), weight
        assert np.abs(q.astype(int)).max() == SAFE_WEIGHT
        if bias_scale:  # the bias keeps its scale = input scale x weight scale
            assert np.allclose(after[bias_scale] / after[scale], before[bias_scale] / before[scale], rtol=1e-6)


def test_every_shipped_onnx_int8_file_has_weights_no_cpu_can_saturate():
    shipped = [p for p in zoo.files() if p.suffix == ".onnx" and "int8" in p.name]
    if not shipped:
        pytest.skip("no ONNX int8 file shipped")
    for path in shipped:
        assert saturating_weights(onnx.load(path)) == [], path.name


@needs_qemu
def test_exported_onnx_int8_answers_alike_on_a_cpu_without_vnni(small_convnet, tmp_path):
    out, images = small_convnet
    native = scores(out / "small_int8.onnx", images, tmp_path)
    emulated = scores(out / "small_int8.onnx", images, tmp_path, cpu="Haswell")
    assert np.max(np.abs(native - emulated)) <= 1e-5


@needs_qemu
def test_shipped_onnx_int8_files_answer_alike_on_a_cpu_without_vnni(real_archive, tmp_path):
    from edgecifar import data

    x = data.load(real_archive).x_test[:200]
    for path in (p for p in zoo.files() if p.suffix == ".onnx" and "int8" in p.name):
        native, emulated = scores(path, x, tmp_path), scores(path, x, tmp_path, cpu="Haswell")
        assert np.array_equal(native.argmax(1), emulated.argmax(1)), path.name
        assert np.max(np.abs(native - emulated)) <= 1e-5, path.name
