"""The device runtime layer: which package runs which file, and LiteRT's C++ chatter kept off the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

from edgecifar import runtime, zoo
from edgecifar.errors import native_stderr_filtered


def test_every_loadable_kind_of_file_names_the_packages_that_run_it_and_how_to_install_them():
    assert set(runtime.RUNTIME_PACKAGES) == set(runtime.LOADERS)
    for suffix, (packages, missing) in runtime.RUNTIME_PACKAGES.items():
        assert packages and "pip install" in missing, suffix
    assert runtime.missing_runtime("model.tflite") is None           # both are installed in the dev venv
    assert runtime.missing_runtime("model.onnx") is None


def test_tflite_info_lines_on_fd_2_are_dropped_and_everything_else_passes(capfd):
    with native_stderr_filtered(runtime.without_tflite_info):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: Didn't find op for builtin opcode 'GELU'\n")
        print("a Python warning", file=sys.stderr)
        os.write(2, b"WARNING: something real\n")
    err = capfd.readouterr().err.splitlines()
    assert sorted(err) == ["ERROR: Didn't find op for builtin opcode 'GELU'", "WARNING: something real",
                           "a Python warning"]


def test_what_native_code_writes_on_fds_1_and_2_is_given_back_and_nothing_leaks_out_later():
    code = ("import ctypes, os\nfrom edgecifar.fdcapture import Captured\n"
            "with Captured() as printed:\n"
            "    os.write(1, b'C++ on stdout\\n'); os.write(2, b'C++ on stderr\\n')\n"
            "    ctypes.CDLL(None).printf(b'held in C stdout buffer\\n')\n"
            "print(repr(printed.text))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # C's stdout on a pipe: fully buffered
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout == repr("C++ on stdout\nC++ on stderr\nheld in C stdout buffer\n") + "\n"


def test_loading_and_running_a_tflite_file_prints_nothing_on_stderr():
    path = next(p for p in zoo.files() if p.suffix == ".tflite")
    code = ("import numpy as np; from edgecifar import runtime\n"
            f"m = runtime.load({str(path)!r}); p = m.predict(np.zeros((3, 32, 32, 3), np.uint8))\n"
            "print(p.shape)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "(3, 10)", proc.stderr
    assert proc.stderr == ""                                          # XNNPACK's INFO line included


def _non_utf8_copy(source, folder, suffix: str):
    """A copy of ``source`` whose file name holds a byte that is not UTF-8 (Python keeps it as a surrogate)."""
    from pathlib import Path

    path = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9" + suffix.encode()))
    path.write_bytes(source.read_bytes())
    return path


def test_a_model_whose_file_name_is_not_utf8_loads_and_runs_in_both_runtimes(tmp_path):
    import numpy as np

    from test_fuzz import ONNX, TFLITE

    for source, suffix in ((TFLITE, ".tflite"), (ONNX, ".onnx")):
        path = _non_utf8_copy(source, tmp_path, suffix)
        probs = runtime.load(path).predict(np.zeros((2, 32, 32, 3), np.uint8))
        assert probs.shape == (2, 10), path


def test_an_error_while_preparing_or_running_a_model_is_one_model_error_line_naming_the_file(tmp_path):
    import numpy as np
    import pytest

    from edgecifar.errors import ModelError
    from test_fuzz import TFLITE, edited_tflite, operator_input_out_of_range

    path = tmp_path / "bad_input_index.tflite"
    path.write_bytes(edited_tflite(TFLITE.read_bytes(), operator_input_out_of_range))
    model = runtime.load(path)                       # the flatbuffer parses: the error comes at allocate_tensors
    with pytest.raises(ModelError) as caught:
        model.predict(np.zeros((1, 32, 32, 3), np.uint8))
    message = str(caught.value)
    assert message.startswith(f"{path}: LiteRT cannot prepare this model (") and "\n" not in message
    assert "Invalid tensor index 9999" in message
