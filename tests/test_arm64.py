"""ARM64: the bench's emulation guard, the agreement report, and (when it is built) the ARM64 board itself.

The board is a Debian arm64 root run under QEMU user-mode emulation with the base install of edgecifar,
reached over ssh on 127.0.0.1 exactly as a real board would be (bench/board/arm64.sh, ``make arm64-board``:
~8 minutes and ~700 MB, so CI does not build it). Tests that need it use it when it answers, start it when
its root exists, and otherwise skip saying why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, separable_images
from edgecifar import zoo
from edgecifar.bench.agreement import agreement, compare, markdown
from edgecifar.bench.devices import parse_worker_output
from edgecifar.bench.worker import emulation

BOARD = ROOT / "bench" / "board" / "arm64.sh"
BIN = Path(sys.executable).parent


def zoo_tflite() -> Path:
    files = [f for f in zoo.files() if f.suffix == ".tflite"]
    if not files:
        pytest.skip("no .tflite file in the zoo")
    return min(files, key=lambda f: f.stat().st_size)


def test_a_real_cpu_is_not_taken_for_an_emulated_one(tmp_path):
    assert emulation() is None                      # this machine, as the worker sees it
    real = dict(environ={}, binfmt_dir=str(tmp_path), parent_exe="/usr/bin/bash")
    assert emulation(machine="x86_64", **real) is None
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    assert emulation(machine="x86_64", **real) is None  # QEMU runs other machines' binaries here, not ours


def test_emulation_shows_in_a_binfmt_entry_for_the_own_machine_a_qemu_parent_or_QEMU_CPU(tmp_path):
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    binfmt = dict(binfmt_dir=str(tmp_path), parent_exe="/usr/bin/bash")
    assert emulation(machine="aarch64", environ={}, **binfmt) == "QEMU user mode (binfmt qemu-aarch64)"
    assert (emulation(machine="aarch64", environ={"QEMU_CPU": "cortex-a76"}, **binfmt)
            == "QEMU user mode (binfmt qemu-aarch64, QEMU_CPU=cortex-a76)")
    # Inside the board's root: no binfmt_misc mount, but the ssh session's shell runs under QEMU.
    assert (emulation(machine="aarch64", environ={}, binfmt_dir="/nonexistent",
                      parent_exe="/usr/bin/qemu-aarch64-static")
            == "QEMU user mode (parent /usr/bin/qemu-aarch64-static)")
    assert emulation(machine="aarch64", environ={"QEMU_CPU": "max"}, binfmt_dir="/nonexistent", parent_exe="") == \
        "QEMU user mode (QEMU_CPU=max)"
    (tmp_path / "qemu-aarch64").write_text("disabled\n")
    assert emulation(machine="aarch64", environ={}, **binfmt) is None


def run_worker(file: Path, tmp_path: Path, **env) -> dict:
    x, y = separable_images(20, seed=3)
    npz = tmp_path / "t.npz"
    np.savez(npz, x=x, y=y)
    proc = subprocess.run([sys.executable, "-m", "edgecifar.bench.worker", str(file), "--images", str(npz),
                           "--runs", "10", "--warmup", "2"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    return parse_worker_output(proc.stdout, proc.stderr, proc.returncode)


def test_an_emulated_worker_measures_accuracy_and_predictions_but_reports_no_timing(tmp_path):
    file = zoo_tflite()
    real = run_worker(file, tmp_path)
    emulated = run_worker(file, tmp_path, QEMU_CPU="cortex-a76")  # QEMU's variable: only the worker reads it here
    assert real["status"] == emulated["status"] == "ok"
    assert real["emulated"] is None and real["latency"]["median_ms"] > 0 and real["peak_rss_mb"] > 0
    assert emulated["emulated"] == "QEMU user mode (QEMU_CPU=cortex-a76)"
    assert emulated["latency"] is None
    assert all(not np.isfinite(emulated[k]) for k in ("throughput_ips", "load_ms", "peak_rss_mb"))
    assert emulated["note"].startswith("latency not reported: emulated CPU")
    assert emulated["predictions"] == real["predictions"] and emulated["output_digests"] == real["output_digests"]
    assert emulated["images"] == 20 and emulated["accuracy"] == real["accuracy"]
    assert "ai-edge-litert" in real["versions"] and "numpy" in real["versions"]


def test_a_worker_without_the_files_runtime_says_what_installs_it(tmp_path):
    """On a base install (no onnxruntime) an ONNX file's error carries the install hint; here onnxruntime
    is installed, so the hint is None: the hint names a missing runtime, never a broken file."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    result = run_worker(broken, tmp_path)
    assert result["status"] == "error" and result["missing_runtime"] is None


def test_agreement_counts_the_images_with_the_same_top1_class():
    assert agreement([1, 2, 3, 4], [1, 2, 0, 4]) == (3, 4)
    assert agreement([], []) == (0, 0)


def worker_result(predictions, **extra) -> dict:
    y = np.array([0, 1, 2, 3])
    correct = int(np.sum(np.array(predictions) == y))
    return {"status": "ok", "machine": "x86_64", "emulated": None, "images": 4, "correct": correct,
            "accuracy": correct / 4, "ci_low": 0.1, "ci_high": 0.9, "predictions": predictions,
            "output_digests": [10 + p for p in predictions], **extra}


def test_a_comparison_row_holds_both_accuracies_the_agreement_and_the_images_with_identical_outputs(tmp_path):
    f = tmp_path / "m_int8.tflite"
    f.write_bytes(b"x" * 10)
    same = compare(f, worker_result([0, 1, 2, 0]), worker_result([0, 1, 2, 0], machine="aarch64"))
    assert same["status"] == "ok" and same["agree"] == 4 and same["agreement"] == 1.0
    assert same["identical_outputs"] == 4 and same["device_machine"] == "aarch64"
    differ = compare(f, worker_result([0, 1, 2, 0]), worker_result([0, 1, 3, 0], machine="aarch64"))
    assert differ["agree"] == 3 and differ["agreement"] == 0.75 and differ["identical_outputs"] == 3
    assert differ["here_accuracy"] == 0.75 and differ["device_accuracy"] == 0.5


def test_a_device_without_the_runtime_gets_a_not_run_row_a_broken_run_an_error_row(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    missing = {"status": "error", "error": "m.onnx: onnxruntime is not installed",
               "missing_runtime": "pip install 'edgecifar[bench]'"}
    row = compare(f, worker_result([0, 1, 2, 3]), missing)
    assert row["status"] == "not run" and "edgecifar[bench]" in row["error"]
    crashed = compare(f, worker_result([0, 1, 2, 3]), {"status": "error", "error": "worker crashed (SIGSEGV)"})
    assert crashed["status"] == "error" and crashed["error"] == "device: worker crashed (SIGSEGV)"


def test_the_report_of_an_emulated_device_says_latency_is_not_reported(tmp_path):
    f = tmp_path / "m_int8.tflite"
    f.write_bytes(b"x" * 10)
    rows = [compare(f, worker_result([0, 1, 2, 0]), worker_result([0, 1, 2, 0], machine="aarch64"))]
    meta = {"command": "python -m edgecifar.bench.agreement --device ssh://b", "device": "ssh://b", "images": 4,
            "data": "d.tar.gz", "data_fingerprint": "abc", "cpu_model": "CPU", "commit": "c", "created": "now",
            "device_info": {"machine": "aarch64", "emulated": "QEMU user mode (QEMU_CPU=cortex-a76)",
                            "here": {"machine": "x86_64"}}}
    text = markdown(rows, meta)
    assert text.startswith("# Top-1 agreement: aarch64 (ssh://b) against x86_64")
    assert "Latency not reported: emulated CPU" in text and "`python -m edgecifar.bench.agreement" in text
    assert "| m_int8.tflite | " in text and "100.0% (4/4) | 4/4 images | ok |" in text


def test_agreement_of_this_machine_with_itself_is_refused_in_one_line(synthetic_archive):
    proc = subprocess.run([sys.executable, "-m", "edgecifar.bench.agreement", str(zoo_tflite()), "--device", "cpu",
                           "--data", str(synthetic_archive)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --device cpu: agreement of this machine with itself says nothing; name another device "
        "(ssh://user@host[:port])"]


# --------------------------------------------------------------------------- the board itself

def board_script(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BOARD), *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def board():
    """The ``--device ...`` flags of the ARM64 board: used when it answers, started when its root exists."""
    status = board_script("status")
    started = False
    if status.returncode == 3:
        pytest.skip(f"no ARM64 board: {status.stdout.strip().splitlines()[0]}")
    if status.returncode != 0:
        if os.geteuid() != 0:
            pytest.skip("the ARM64 board is built but down, and starting it needs root (mount, chroot)")
        start = board_script("start")
        assert start.returncode == 0, start.stdout + start.stderr
        started = True
    yield board_script("url").stdout.split()
    if started:
        board_script("stop")


def test_bench_on_the_arm64_board_runs_on_aarch64_and_reports_no_emulated_latency(board, synthetic_archive, tmp_path):
    file, out = zoo_tflite(), tmp_path / "arm64.json"
    proc = subprocess.run([str(BIN / "edgecifar"), "bench", str(file), *board, "--data", str(synthetic_archive),
                           "--limit", "50", "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = json.loads(out.read_text())["rows"][0]
    assert row["status"] == "ok" and row["images"] == 50 and row["tensorflow_imported"] is False
    assert row["device"].startswith("ssh://root@127.0.0.1:")
    assert row["latency_ms"] is None and row["throughput_ips"] is None and row["peak_rss_mb"] is None
    assert row["note"].startswith("latency not reported: emulated CPU (QEMU user mode (")
    assert "QEMU_CPU=cortex-a76" in row["note"]
    assert "latency not reported: emulated CPU" in proc.stdout


def test_the_arm64_board_agrees_with_this_machine_image_by_image_and_names_what_it_cannot_run(
        board, synthetic_archive, tmp_path):
    tflite = zoo_tflite()
    onnx = [f for f in zoo.files() if f.suffix == ".onnx"][:1]
    out = tmp_path / "arm64.json"
    proc = subprocess.run([sys.executable, "-m", "edgecifar.bench.agreement", str(tflite), *map(str, onnx), *board,
                           "--data", str(synthetic_archive), "--limit", "50", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["meta"]["device_info"]["machine"] == "aarch64"
    assert "QEMU_CPU=cortex-a76" in doc["meta"]["device_info"]["emulated"]
    row = doc["rows"][0]
    assert row["status"] == "ok" and row["here_machine"] == "x86_64" and row["device_machine"] == "aarch64"
    # The same top-1 class on every image (raw outputs may differ by a rounding step: other kernels).
    assert row["agree"] == 50
    for r in doc["rows"][1:]:   # the base install has no onnxruntime
        assert r["status"] == "not run" and "edgecifar[bench]" in r["error"]
