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
