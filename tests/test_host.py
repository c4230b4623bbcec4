"""Every time and latency names its machine: the CPU model is read as lscpu shows it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from edgecifar.host import cpu_model


@pytest.mark.skipif(shutil.which("lscpu") is None, reason="lscpu not installed")
def test_the_cpu_model_is_the_one_lscpu_shows():
    out = subprocess.run(["lscpu"], capture_output=True, text=True, env={"LC_ALL": "C"}).stdout
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    assert cpu_model() in names
