"""Parsing TensorFlow Lite ``benchmark_model`` output, tested on REAL output published by its users.

Every sample below is copied verbatim (only the lines the parser needs, plus neighbours) from a
public source, named above it.

No Android phone is available here, so the adb path is exercised with a stand-in for the phone: a small
``adb`` shell script that records the command lines edgecifar sends and answers ``benchmark_model`` with one
of the real outputs below. It stands in for the device, not for a runtime: no model runs on this path (the
phone would run it), and nothing replaces LiteRT or onnxruntime, which the local bench tests run for real.
What these tests prove is what edgecifar sends to a phone and how it reads benchmark_model's real answers.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

import pytest

from edgecifar.bench.android import benchmark_model_row, parse_benchmark_model
from edgecifar.bench.devices import AndroidDevice, Job, open_device

# lp6m/yolov5s_android, benchmark/README.md (commit 7b789d1023e0d78a2d6cb9287a002c939ab4e67a):
# TF 2.4.0 benchmark_model on a Xiaomi Mi11, fp32 YOLOv5s on CPU. Old "Peak memory footprint" format.
MI11_TF24_FP32 = """\
count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""

# Same file: the int8 model through NNAPI qti-default, which fails.
MI11_TF24_NNAPI_FAILURE = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [/data/local/tmp/yolov5s_int8_640.tflite]
#threads used for CPU inference: [4]
Use NNAPI: [1]
NNAPI execution preference: [sustained_speed]
NNAPI accelerator name: [qti-default]
NNAPI accelerators available: [qti-default,qti-dsp,qti-gpu,nnapi-reference]
Loaded model /data/local/tmp/yolov5s_int8_640.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for NNAPI.
ERROR: NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 while completing NNAPI compilation.

ERROR: Node number 248 (TfLiteNnapiDelegate) failed to prepare.

ERROR: Restored original execution plan after delegate application failure.
Failed to apply NNAPI delegate.
Benchmarking failed.
"""

# lp6m/yolov5s_android, benchmark/benchmark.md (commit 827d8874d92cfba47094261f0098eb0b2d4280ea):
# a TFLite nightly build on the same phone, int8 on CPU. Newer "Memory footprint delta" format.
MI11_NIGHTLY_INT8 = """\
count=50 first=157506 curr=159864 min=157298 max=165731 avg=159413 std=1311
Inference timings in us: Init: 1829, First inference: 232333, Warmup (avg): 184951, Inference (avg): 159413
Memory footprint delta from the start of the tool (MB): init=5.35938 overall=43.9961
"""

# NobuoTsukamoto/meta-tensorflow-lite, doc/tensorflow-lite-benchmark.md: MobileNet v1 on a QEMU
# RISC-V board with --enable_op_profiling=true (exponent notation, and profiler "count=" lines after).
RISCV_QEMU_PROFILING = """\
Loaded model ./mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t         AllocateTensors\t            0.000\t    1.356\t    1.356\t100.000%\t100.000%\t     0.000\t        1\tAllocateTensors/0

Timings (microseconds): count=1 curr=1356
Memory (bytes): count=0
1 nodes observed

Timings (microseconds): count=50 first=2989660 curr=2912978 min=2727203 max=3189476 avg=2.9499e+06 std=109770
Memory (bytes): count=0
31 nodes observed
"""

# ArmDeveloperEcosystem/arm-learning-paths, content/learning-paths/servers-and-cloud-computing/
# tensorflow-gcp/benchmarking.md (an earlier revision, "TensorFlow Benchmark on GCP SUSE Arm64 VM"):
# the nightly linux_aarch64 benchmark_model, "INFO:"-prefixed lines with p5/median/p95.
ARM64_NIGHTLY_INFO = """\
INFO: Loaded model mobilenet_v2_224.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 13.9193
INFO: Initialized session in 6.395ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=153 first=2761 curr=2885 min=2605 max=18080 avg=3243.58 std=2165 p5=2630 median=2761 p95=5331

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=337 first=2881 curr=2703 min=2605 max=20356 avg=2942.27 std=1190 p5=2647 median=2781 p95=3169

INFO: Inference timings in us: Init: 6395, First inference: 2761, Warmup (avg): 3243.58, Inference (avg): 2942.27
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=39.4531 overall=40.8281
"""

# The "--report_peak_memory_footprint=true" line as printed by the tool: the format string is in
# tensorflow/tensorflow, tensorflow/lite/tools/benchmark/benchmark_model.cc (BenchmarkLoggingListener::
# OnBenchmarkEnd); these two lines are a user's real run of it quoted in a public repository's notes
# (found through a code search, which did not name the repository).
PERIODIC_PEAK = """\
INFO: Memory footprint delta from the start of the tool (MB): init=2.43359 overall=8.67578
INFO: Overall peak memory footprint (MB) via periodic monitoring: 13.1797
"""


def test_tf24_format_gives_timings_in_ms_and_peak_memory():
    p = parse_benchmark_model(MI11_TF24_FP32)
    assert p["init_ms"] == pytest.approx(16.242)
    assert p["first_ms"] == pytest.approx(360.262)
    assert p["warmup_avg_ms"] == pytest.approx(304.586)
    assert p["avg_ms"] == pytest.approx(249.684)
    assert p["runs"] == 50 and p["min_ms"] == pytest.approx(247.067) and p["max_ms"] == pytest.approx(254.474)
    assert p["std_ms"] == pytest.approx(1.442)
    assert (p["mem_kind"], p["mem_init_mb"], p["mem_overall_mb"]) == ("peak", 4.92969, 138.809)
    assert "error" not in p


def test_delta_memory_format_is_told_apart_from_peak():
    p = parse_benchmark_model(MI11_NIGHTLY_INT8)
    assert p["avg_ms"] == pytest.approx(159.413)
    assert (p["mem_kind"], p["mem_init_mb"], p["mem_overall_mb"]) == ("delta", 5.35938, 43.9961)
    assert "peak_mem_mb" not in p


def test_exponent_notation_and_profiler_count_lines_do_not_confuse_the_parser():
    p = parse_benchmark_model(RISCV_QEMU_PROFILING)
    assert p["avg_ms"] == pytest.approx(2950.34)
    assert p["warmup_avg_ms"] == pytest.approx(3512.39)
    assert p["runs"] == 50                          # the regular runs, not "count=1" nor the profiler's
    assert p["min_ms"] == pytest.approx(2727.568) and p["max_ms"] == pytest.approx(3189.954)
    assert p["model_mb"] == pytest.approx(16.9008)
    assert p["mem_overall_mb"] == pytest.approx(46.0859)


def test_info_prefixed_lines_with_percentiles_give_the_median():
    p = parse_benchmark_model(ARM64_NIGHTLY_INFO)
    assert p["runs"] == 337
    assert (p["p5_ms"], p["median_ms"], p["p95_ms"]) == pytest.approx((2.647, 2.781, 3.169))
    assert p["avg_ms"] == pytest.approx(2.94227)
    assert p["init_ms"] == pytest.approx(6.395)
    row = benchmark_model_row(p)
    assert row["status"] == "ok"
    assert row["latency"]["median_ms"] == pytest.approx(2.781)   # the median when printed, not the mean
    assert row["latency"]["spread_lo_ms"] == pytest.approx(2.605)
    assert math.isnan(row["accuracy"])                            # random inputs: no accuracy on device
    assert math.isnan(row["peak_rss_mb"]) and "growth since start" in row["note"]


def test_periodic_peak_memory_is_preferred_when_printed():
    p = parse_benchmark_model(PERIODIC_PEAK)
    assert p["peak_mem_mb"] == pytest.approx(13.1797)
    assert p["error"] == "benchmark_model: no timing lines in its output"  # only memory lines here
    row = benchmark_model_row({**parse_benchmark_model(MI11_NIGHTLY_INT8), "peak_mem_mb": 13.1797})
    assert row["peak_rss_mb"] == pytest.approx(13.1797)


def test_old_peak_format_fills_the_memory_column():
    row = benchmark_model_row(parse_benchmark_model(MI11_TF24_FP32))
    assert row["peak_rss_mb"] == pytest.approx(138.809)
    assert row["latency"]["median_ms"] == pytest.approx(249.684)  # no median printed: the mean


def test_a_failed_run_becomes_its_first_error_line():
    p = parse_benchmark_model(MI11_TF24_NNAPI_FAILURE)
    assert p["error"] == ("benchmark_model: NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 "
                          "while completing NNAPI compilation.")
    row = benchmark_model_row(p)
    assert row["status"] == "error" and "ANEURALNETWORKS_OP_FAILED" in row["error"]


def test_logcat_prefixed_lines_parse_too():
    logcat = "\n".join(f"07-08 15:34:26.201 I/tflite  ( 5395): {line}" for line in MI11_NIGHTLY_INT8.splitlines())
    assert parse_benchmark_model(logcat)["avg_ms"] == pytest.approx(159.413)


# --------------------------------------------------------------------------- the adb path, with a stand-in phone

@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """A stand-in for the phone (we have none): an ``adb`` on PATH that logs its arguments and, for ``shell
    .../benchmark_model``, prints a real sample (ARM64_NIGHTLY_INFO, published by Arm). Returns the call log."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "adb.log"
    sample = tmp_path / "sample.txt"
    sample.write_text(ARM64_NIGHTLY_INFO)
    script = bindir / "adb"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {log}
case "$*" in
  *benchmark_model\\ --graph=*) cat {sample} ;;
esac
exit 0
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_android_device_pushes_the_file_and_binary_and_parses_the_run(fake_adb, tmp_path):
    model = tmp_path / "m_int8.tflite"
    model.write_bytes(b"x")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    dev = open_device("android:emulator-5554", benchmark_binary=str(binary))
    assert isinstance(dev, AndroidDevice) and dev.name == "android:emulator-5554"
    row = dev.run(Job(file=model, images=tmp_path / "unused.npz", threads=2, runs=30, warmup=3))
    dev.close()
    calls = fake_adb.read_text().splitlines()
    assert all(c.startswith("-s emulator-5554 ") for c in calls)
    assert any(c.endswith(f"push {binary} /data/local/tmp/edgecifar/benchmark_model") for c in calls)
    (push,) = [c for c in calls if f"push {model} " in c]   # once, under a name made here, not the user's
    assert re.fullmatch(r".* /data/local/tmp/edgecifar/[0-9a-f]{8}-0\.tflite", push) and "m_int8" not in push.split()[-1]
    run = next(c for c in calls if "--graph=" in c)
    assert "--num_threads=2" in run and "--num_runs=30" in run and "--warmup_runs=3" in run
    assert row["status"] == "ok" and row["latency"]["median_ms"] == pytest.approx(2.781)
    assert row["threads"] == 2


def test_android_without_the_binary_or_adb_is_a_clear_row_error(tmp_path, monkeypatch):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    row = AndroidDevice(benchmark_binary=None).run(Job(file=model, images=Path("x.npz")))
    assert row == {"status": "error", "error": "adb not found on PATH (install Android platform-tools)"}


def test_android_needs_benchmark_binary_and_tflite_files(fake_adb, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    row = AndroidDevice().run(Job(file=model, images=Path("x.npz")))
    assert row["status"] == "error" and "--benchmark-binary" in row["error"]
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    row = AndroidDevice(benchmark_binary=str(model)).run(Job(file=onnx, images=Path("x.npz")))
    assert row["status"] == "error" and ".tflite files only" in row["error"]
