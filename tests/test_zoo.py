"""The shipped zoo: its manifest describes real files, and bench figures are recorded into it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from conftest import fresh_python
from edgecifar import zoo


def test_bench_figures_of_zoo_files_are_recorded_and_other_rows_ignored(tmp_path):
    (tmp_path / "m_int8.tflite").write_bytes(b"x")
    (tmp_path / zoo.MANIFEST).write_text(json.dumps({"files": [{"file": "m_int8.tflite"}, {"file": "gone.tflite"}]}))
    row = {"file": str(tmp_path / "m_int8.tflite"), "status": "ok", "threads": 1, "accuracy": 0.9, "images": 1000,
           "ci_low": 0.88, "ci_high": 0.92, "latency_ms": 0.05, "runtime": "litert"}
    report = {"meta": {"device": "cpu", "data": "/x/cifar-10-python.tar.gz", "commit": "abc"},
              "rows": [row, {**row, "threads": 2, "latency_ms": 9.0},
                       {**row, "file": str(tmp_path / "elsewhere" / "m_int8.tflite")},
                       {**row, "file": str(tmp_path / "gone.tflite"), "status": "error"}]}
    assert zoo.record_bench(report, tmp_path) == 1
    entries = json.loads((tmp_path / zoo.MANIFEST).read_text())["files"]
    assert entries[0]["bench"]["latency_ms"] == 0.05 and entries[0]["bench"]["data"] == "cifar-10-python.tar.gz"
    assert "bench" not in entries[1]


def test_every_shipped_file_exists_with_the_bytes_and_hash_its_manifest_states():
    entries = zoo.load_manifest().get("files", [])
    if not entries:
        pytest.skip("no models shipped yet")
    for e in entries:
        data = (zoo.ZOO_DIR / e["file"]).read_bytes()
        assert len(data) == e["bytes"] and hashlib.sha256(data).hexdigest() == e["sha256"]


def test_shipped_files_run_without_tensorflow_and_fit_the_size_budget():
    paths = zoo.files()
    if not paths:
        pytest.skip("no models shipped yet")
    assert sum(p.stat().st_size for p in paths) <= 5 * 1024 * 1024
    code = ("import sys, numpy as np; from edgecifar import runtime, zoo\n"
            "x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)\n"
            "for p in zoo.files():\n"
            "    probs = runtime.load(p).predict(x); assert probs.shape == (4, 10), p\n"
            "    assert np.allclose(probs.sum(1), 1, atol=0.02), p\n"
            "print('tensorflow' in sys.modules)")
    assert fresh_python(code) == "False"


def test_zoo_command_lists_the_shipped_files():
    out = subprocess.run([sys.executable, "-m", "edgecifar", "zoo"], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "COLUMNS": "250"})
    assert out.returncode == 0, out.stderr
    names = [e["file"] for e in zoo.load_manifest().get("files", [])]
    assert all(n in out.stdout for n in names) if names else "no models shipped" in out.stdout
