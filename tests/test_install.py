"""Packaging: the wheel installs the three stages as edgecifar.train/.export/.bench, and the CLI lists them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import fresh_python

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_built_wheel_imports_all_three_stages(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("edgecifar-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    code = ("import edgecifar, edgecifar.train, edgecifar.export, edgecifar.bench, edgecifar.models, edgecifar.runtime;"
            "print(edgecifar.train.__file__); print(edgecifar.export.__file__); print(edgecifar.bench.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, timeout=120, check=True).stdout.split()
    assert [Path(p).parent.name for p in out] == ["train", "export", "bench"]
    assert all(str(target) in p for p in out)


def test_the_cli_lists_the_pipeline_commands():
    out = subprocess.run([sys.executable, "-m", "edgecifar", "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    for command in ("train", "export", "bench", "predict", "models", "zoo"):
        assert command in out


def test_importing_the_package_and_runtime_does_not_import_tensorflow():
    code = "import sys, edgecifar, edgecifar.runtime, edgecifar.data, edgecifar.cli; print('tensorflow' in sys.modules)"
    assert fresh_python(code) == "False"


def test_models_command_lists_every_registered_model_with_parameters():
    out = subprocess.run([sys.executable, "-m", "edgecifar", "models"], capture_output=True, text=True,
                         timeout=300, check=True, env={**__import__("os").environ, "COLUMNS": "200"}).stdout
    for name, params in (("baseline", "315,722"), ("resnet8", "78,666")):
        assert name in out and params in out
