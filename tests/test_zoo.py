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
    # 7 MiB: the wheel a device installs. The zoo ships int8 files, and one fp32 twin (mnv2_ft96's) as the
    # measure of what int8 costs.
    assert sum(p.stat().st_size for p in paths) <= 7 * 1024 * 1024
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


def zoo_output(**env: str | None) -> str:
    """``edgecifar zoo``'s stdout, piped, with ``env`` set (None: unset) over this environment."""
    import os

    environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    out = subprocess.run([sys.executable, "-m", "edgecifar", "zoo"], capture_output=True, text=True, timeout=120,
                         env=environ, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return out.stdout


def headers_shown(text: str) -> set[str]:
    from edgecifar.commands import zoo_columns

    header_line = next(line for line in text.splitlines() if " file " in line)
    return {c.header for c in zoo_columns([]) if f" {c.header} " in header_line}


def test_zoo_footer_explains_only_the_columns_the_table_shows():
    if not zoo.load_manifest().get("files"):
        pytest.skip("no models shipped yet")
    narrow, wide = zoo_output(COLUMNS="80"), zoo_output(COLUMNS="250")
    assert "val acc (n)" not in headers_shown(narrow) and "val acc" not in narrow
    assert "val acc (n)" in headers_shown(wide) and "\nval acc (n): top-1 on (n) held-out training images" in wide
    for text in (narrow, wide):
        assert "test acc: top-1 on the first 1,000 CIFAR-10 test images" in text.replace("\n", " ")


def test_piped_zoo_shows_every_column_whatever_terminal_it_was_started_from():
    """rich measures the terminal on stdin too: a 60-column one used to fold the table of a log."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    from edgecifar.commands import zoo_columns

    if not zoo.load_manifest().get("files"):
        pytest.skip("no models shipped yet")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
        out = subprocess.run([sys.executable, "-m", "edgecifar", "zoo"], capture_output=True, text=True, timeout=120,
                             env=env, stdin=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert out.returncode == 0, out.stderr
    assert headers_shown(out.stdout) == {c.header for c in zoo_columns([])} and "…" not in out.stdout


def test_bench_figures_keep_the_cpu_that_measured_them_and_zoo_names_it(tmp_path):
    from edgecifar.commands import measured_on

    for name in ("a_int8.tflite", "b_int8.onnx", "c_int8.tflite"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / zoo.MANIFEST).write_text(json.dumps({"files": [{"file": n} for n in ("a_int8.tflite", "b_int8.onnx",
                                                                                      "c_int8.tflite")]}))
    row = {"status": "ok", "threads": 1, "accuracy": 0.9, "images": 1000, "latency_ms": 0.05}
    meta = {"device": "cpu", "data": "cifar-10-python.tar.gz", "commit": "88b9a8c689bb-dirty", "cpu": "AMD EPYC",
            "cpu_features": ["avx2"]}
    rows = [{**row, "file": str(tmp_path / n)} for n in ("a_int8.tflite", "c_int8.tflite")]
    zoo.record_bench({"meta": meta, "rows": rows}, tmp_path)
    zoo.record_bench({"meta": {**meta, "cpu": "Intel Xeon", "commit": "c66a490", "cpu_features": ["avx512_vnni"]},
                      "rows": [{**row, "file": str(tmp_path / "b_int8.onnx")}]}, tmp_path)
    entries = zoo.load_manifest(tmp_path)["files"]
    assert [(e["bench"]["cpu"], e["bench"]["cpu_features"]) for e in entries] == [
        ("AMD EPYC", ["avx2"]), ("Intel Xeon", ["avx512_vnni"]), ("AMD EPYC", ["avx2"])]
    assert measured_on(entries) == ["bench figures measured on Intel Xeon at commit c66a490 for b_int8.onnx; "
                                    "on AMD EPYC at commit 88b9a8c-dirty for the other files."]
    assert measured_on(entries[:1]) == ["bench figures measured on AMD EPYC at commit 88b9a8c-dirty for every "
                                        "benched file."]
