"""Real model files for the bench, predict and remote tests, converted here from the ``trained_run``
fixture's Keras model (TFLite fp32, full-int8 TFLite, ONNX fp32), plus broken ones. Conversion uses
TensorFlow directly, not the export stage, so these tests do not depend on it.

The fixtures that make them (``bench_models``, ``broken_models``) live in conftest.py.
"""

from __future__ import annotations

import pytest

from conftest import BENCH_GOOD, fresh_python

pytestmark = pytest.mark.slow   # every file here is converted from a trained model

GOOD = BENCH_GOOD


def test_converted_files_load_in_the_runtime_without_tensorflow(bench_models):
    code = ("import sys, numpy as np; from edgecifar import runtime as rt\n"
            f"for n in {GOOD!r}:\n"
            f"    p = rt.load({str(bench_models)!r} + '/' + n).predict(np.zeros((2, 32, 32, 3), np.uint8))\n"
            "    assert p.shape == (2, 10), p.shape\n"
            "print('tensorflow' in sys.modules)")
    assert fresh_python(code) == "False"
