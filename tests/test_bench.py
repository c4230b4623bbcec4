"""``edgecifar bench`` end to end on real files: LiteRT and onnxruntime in worker processes, reports,
plots, confusion matrices, manifests, default paths, and bad inputs that must not stop the others."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import small_model
from edgecifar.bench import core
from edgecifar.bench.devices import Job, LocalDevice, parse_worker_output
from edgecifar.cli import main

QUICK = ["--runs", "10", "--warmup", "2", "--blocks", "5", "--limit", "40"]


def bench(*args: str, data=None):
    """Run ``edgecifar bench`` in-process; workers still run as separate processes."""
    extra = ["--data", str(data)] if data else []
    return CliRunner().invoke(main, ["bench", *args, *extra, *QUICK], catch_exceptions=False)


def good_files(folder: Path) -> list[str]:
    return [str(folder / n) for n in ("tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx")]


@pytest.mark.slow
def test_bench_measures_litert_and_onnxruntime_files_into_json_and_csv(bench_models, synthetic_archive, tmp_path):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    result = bench(*good_files(bench_models), "--json", str(out_json), "--csv", str(out_csv), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    doc = json.loads(out_json.read_text())
    rows = {Path(r["file"]).name: r for r in doc["rows"]}
    assert set(rows) == {"tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx"}
    assert rows["tiny_fp32.tflite"]["runtime"] == rows["tiny_int8.tflite"]["runtime"] == "litert"
    assert rows["tiny_fp32.onnx"]["runtime"] == "onnxruntime"
    for r in rows.values():
        assert r["status"] == "ok" and r["error"] is None
        assert r["images"] == 40 and r["accuracy"] == r["correct"] / 40
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
        assert r["accuracy"] > 0.5                     # trained on separable synthetic images
        assert 0 < r["spread_lo_ms"] <= r["latency_ms"] <= r["spread_hi_ms"]
        assert r["p90_ms"] <= r["p99_ms"] and r["runs"] == 10 and r["blocks"] == 5
        assert r["throughput_ips"] > 0 and r["load_ms"] > 0 and r["peak_rss_mb"] > 0
        assert r["tensorflow_imported"] is False       # the worker never imports TensorFlow
        # From the manifest beside the files:
        assert r["model"] == "baseline" and r["parameters"] > 0 and r["macs"] == 1_234_567
        assert r["bytes"] == (bench_models / Path(r["file"]).name).stat().st_size
    assert rows["tiny_int8.tflite"]["precision"] == "int8" and rows["tiny_fp32.onnx"]["precision"] == "fp32"
    assert doc["meta"]["images"] == 40 and doc["meta"]["device"] == "cpu"
    assert doc["pareto_front"]
    with out_csv.open() as fh:
        table = list(csv.DictReader(fh))
    assert [Path(r["file"]).name for r in table] == [Path(r["file"]).name for r in doc["rows"]]
    assert "predictions" not in table[0]
    # The terminal table shows every file and the note on how latency is summarized.
    assert "tiny_int8.tflite" in result.output and "median of 5 block medians" in result.output


@pytest.mark.slow
def test_markdown_report_has_a_row_per_file_and_says_what_was_measured(bench_models, synthetic_archive, tmp_path):
    out = tmp_path / "r.md"
    result = bench(*good_files(bench_models), "--markdown", str(out), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("40 test images from ") and "median of 5 block medians of 10 runs" in text
    rows = [l for l in text.splitlines() if l.startswith("| tiny_")]
    assert sorted(r.split(" | ")[0][2:] for r in rows) == sorted(Path(f).name for f in good_files(bench_models))
    assert all(" ok" in r for r in rows)


@pytest.mark.slow
def test_each_thread_count_is_its_own_row(bench_models, synthetic_archive, tmp_path):
    out = tmp_path / "r.json"
    result = bench(str(bench_models / "tiny_int8.tflite"), "--threads", "1,2", "--json", str(out),
                   data=synthetic_archive)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["threads"] for r in rows] == [1, 2]
    assert rows[0]["accuracy"] == rows[1]["accuracy"]


@pytest.mark.slow
def test_plot_and_confusion_matrices_are_written(bench_models, synthetic_archive, tmp_path):
    plot, conf = tmp_path / "pareto.png", tmp_path / "confusion"
    result = bench(*good_files(bench_models), "--plot", str(plot), "--confusion", str(conf), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pngs = sorted(p.name for p in conf.glob("*.png"))
    assert pngs == ["tiny_fp32_onnx.png", "tiny_fp32_tflite.png", "tiny_int8_tflite.png"]
    assert "most confused" in result.output


@pytest.mark.slow
def test_bad_files_get_their_own_error_rows_and_the_others_still_run(bench_models, broken_models,
                                                                     synthetic_archive, tmp_path):
    out = tmp_path / "r.json"
    missing = tmp_path / "gone.tflite"
    not_model = tmp_path / "notes.txt"
    not_model.write_text("hello")
    result = bench(str(bench_models / "tiny_int8.tflite"), str(broken_models), str(bench_models / "wrong_shape.tflite"),
                   str(missing), str(not_model), "--json", str(out), data=synthetic_archive)
    assert result.exit_code == 1                        # some rows failed
    assert "Traceback" not in result.output
    rows = {Path(r["file"]).name: r for r in json.loads(out.read_text())["rows"]}
    assert rows["tiny_int8.tflite"]["status"] == "ok"
    expected = {
        "truncated.tflite": "not a loadable TFLite model",
        "random.tflite": "not a loadable TFLite model",
        "random.onnx": "not a loadable ONNX model",
        "wrong_shape.tflite": "4 input channels: a classifier of photos takes 1 (grey) or 3 (RGB)",
        "gone.tflite": "no such file",
        "notes.txt": "not a model file",
    }
    for name, message in expected.items():
        assert rows[name]["status"] == "error", name
        assert message in rows[name]["error"], rows[name]["error"]
        assert "\n" not in rows[name]["error"]
    assert f"{len(expected)} of {len(expected) + 1} rows failed" in result.output


def test_a_crashing_or_failing_worker_is_a_row_error_not_a_bench_crash(tmp_path):
    row = LocalDevice(python=sys.executable).run(Job(file=tmp_path / "x.tflite", images=tmp_path / "x.npz"))
    assert row["status"] == "error" and "x.npz" in row["error"]   # the worker's own one-line report
    row = LocalDevice(python=str(tmp_path / "no-python")).run(Job(file=tmp_path / "x.tflite", images=tmp_path / "x.npz"))
    assert row["status"] == "error" and row["error"].startswith("cannot start")
    assert parse_worker_output("", "", -11) == {"status": "error", "error": "worker crashed (SIGSEGV)"}
    assert parse_worker_output("", "Traceback...\nImportError: no numpy\n", 1)["error"] == \
        "worker failed: ImportError: no numpy"


@pytest.mark.slow
def test_the_legacy_tflite_runtime_is_selectable_and_reported_when_missing(bench_models, synthetic_archive, tmp_path):
    try:
        import tflite_runtime  # noqa: F401
        pytest.skip("tflite-runtime is installed here; this checks the message when it is not")
    except ImportError:
        pass
    out = tmp_path / "r.json"
    result = bench(str(bench_models / "tiny_fp32.tflite"), "--runtime", "tflite-runtime", "--json", str(out),
                   data=synthetic_archive)
    assert result.exit_code == 1
    row = json.loads(out.read_text())["rows"][0]
    # The true reason: this runtime is missing, LiteRT (installed with the base install) is not.
    assert row["status"] == "error" and "no TFLite runtime installed" not in row["error"]
    assert row["error"] == ("--runtime tflite-runtime: tflite-runtime is not installed (pip install tflite-runtime); "
                            "litert is installed: use --runtime litert (or auto)")


@pytest.mark.parametrize("name, precision", [
    ("net_int8.tflite", "int8"), ("net_mixed_int8.tflite", "mixed_int8"), ("net_int16x8.tflite", "int16x8"),
    ("net-fp16.tflite", "fp16"), ("net_fp32_old.tflite", "fp32"), ("x_mixed_int8_seed1.tflite", "mixed_int8"),
    ("x_int16x8_v2.tflite", "int16x8"), ("checkpoint8.tflite", None), ("network.tflite", None),
])
def test_a_file_name_says_its_precision_compound_names_before_their_parts(name, precision):
    from edgecifar.bench.worker import precision_from_name

    assert precision_from_name(Path(name)) == precision


@pytest.mark.slow
def test_without_a_manifest_format_and_precision_come_from_the_file(bench_models, synthetic_archive, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(bench_models / "tiny_int8.tflite", bare / "model_a.tflite")   # no hint in the name
    shutil.copy(bench_models / "tiny_fp32.tflite", bare / "net_fp16.tflite")  # a (wrong) hint in the name wins
    out = tmp_path / "r.json"
    result = bench(str(bare), "--json", str(out), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    rows = {Path(r["file"]).name: r for r in json.loads(out.read_text())["rows"]}
    assert rows["model_a.tflite"]["precision"] == "int8"       # from the int8 input tensor
    assert rows["net_fp16.tflite"]["precision"] == "fp16"
    assert rows["model_a.tflite"]["format"] == "tflite"
    assert rows["model_a.tflite"]["parameters"] is None and rows["model_a.tflite"]["model"] == "model_a"


def test_default_paths_are_the_zoo_plus_the_newest_export(tmp_path, monkeypatch):
    old, new = tmp_path / "runs" / "a" / "export", tmp_path / "runs" / "b" / "export"
    for folder in (old, new):
        folder.mkdir(parents=True)
    shutil.copy(small_model(), old / "old_int8.tflite")     # the paths are chosen by name and time, not content
    shutil.copy(small_model(), new / "new_fp32.onnx")
    import os

    os.utime(old / "old_int8.tflite", (1, 1))
    monkeypatch.setattr("edgecifar.zoo.files", lambda *a, **k: [])
    assert core.default_paths(tmp_path / "runs") == [new / "new_fp32.onnx"]
    with pytest.raises(Exception, match="nothing to bench"):
        core.default_paths(tmp_path / "no-runs")


def test_bench_with_nothing_to_bench_says_what_to_pass(tmp_path, monkeypatch, synthetic_archive):
    monkeypatch.setenv("EDGECIFAR_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr("edgecifar.zoo.files", lambda *a, **k: [])
    result = CliRunner().invoke(main, ["bench", "--data", str(synthetic_archive)])
    assert result.exit_code == 2
    assert "nothing to bench" in result.output and "Traceback" not in result.output


def test_unknown_device_is_a_one_line_error(synthetic_archive):
    result = CliRunner().invoke(main, ["bench", str(small_model()), "--device", "tpu://x",
                                       "--data", str(synthetic_archive)])
    assert result.exit_code == 2 and "unknown device 'tpu://x'" in result.output


@pytest.mark.slow
def test_worker_runs_alone_and_never_imports_tensorflow(bench_models, tmp_path):
    from conftest import separable_images

    x, y = separable_images(20, seed=3)
    npz = tmp_path / "t.npz"
    np.savez(npz, x=x, y=y)
    for name in ("tiny_fp32.tflite", "tiny_int8.tflite", "tiny_fp32.onnx"):
        proc = subprocess.run([sys.executable, "-m", "edgecifar.bench.worker", str(bench_models / name),
                               "--images", str(npz), "--runs", "5", "--warmup", "1"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        result = parse_worker_output(proc.stdout, proc.stderr, proc.returncode)
        assert result["status"] == "ok" and result["tensorflow_imported"] is False
        assert len(result["predictions"]) == 20 and result["images"] == 20


def test_rows_whose_files_share_a_name_are_told_apart_by_their_run_folder():
    from edgecifar.bench.report import display_names

    rows = [{"file": "runs/ladder/baseline-seed0/export/baseline_int8.tflite"},
            {"file": "runs/ladder/baseline-seed1/export/baseline_int8.tflite"},
            {"file": "edgecifar/zoo/edge_tiny_int8.tflite"}]
    assert display_names(rows) == ["baseline-seed0/baseline_int8.tflite", "baseline-seed1/baseline_int8.tflite",
                                   "edge_tiny_int8.tflite"]
