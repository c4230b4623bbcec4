"""An export killed with SIGKILL mid-write leaves its temporary behind: the next ``bench`` of the folder never
benches it, and the next export into the folder deletes it and finishes cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecifar.cli import main

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))  # the console script of this venv


def export_args(run: Path, archive: Path, out: Path) -> list[str]:
    return ["export", str(run), "--int8", "--fp32", "--calibration", "100", "--val-size", "50", "--data",
            str(archive), "--out", str(out)]


def bench_rows(folder: Path, archive: Path, tmp_path: Path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", str(folder), "--runs", "5", "--warmup", "1", "--limit", "20",
                                       "--data", str(archive), "--json", str(out)], catch_exceptions=False)
    return result, {Path(r["file"]).name: r for r in json.loads(out.read_text())["rows"]}


def kill_when(proc: subprocess.Popen, appeared, timeout: float = 600) -> list[Path]:
    """SIGKILL the process group of ``proc`` as soon as ``appeared()`` returns something; what it returned."""
    deadline = time.time() + timeout
    found: list[Path] = []
    try:
        while time.time() < deadline and proc.poll() is None and not found:
            found = appeared()
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return found


@pytest.mark.slow
def test_a_killed_export_leaves_a_folder_the_next_bench_and_export_handle_cleanly(trained_run, synthetic_archive,
                                                                                  tmp_path):
    out = tmp_path / "export"
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen([EDGECIFAR, *export_args(trained_run, synthetic_archive, out)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        # fp32 comes first: once the int8 file's temporary exists, fp32 is written and validated, and the
        # manifest (written last) is not.
        temporaries = kill_when(proc, lambda: sorted(out.glob(".baseline_int8.tflite.*")))
    assert temporaries, (tmp_path / "killed.log").read_text()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["baseline_fp32.tflite"]
    assert all(p.exists() for p in temporaries)

    result, rows = bench_rows(out, synthetic_archive, tmp_path)
    assert result.exit_code == 0, result.output
    assert list(rows) == ["baseline_fp32.tflite"] and rows["baseline_fp32.tflite"]["status"] == "ok"

    again = subprocess.run([EDGECIFAR, *export_args(trained_run, synthetic_archive, out)], capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    for temporary in temporaries:
        assert f"removed {temporary.name}: a temporary left by an export that was killed" in again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["baseline_fp32.tflite", "baseline_int8.tflite", "edgecifar.json"]

    result, rows = bench_rows(out, synthetic_archive, tmp_path)
    assert result.exit_code == 0, result.output
    assert sorted(rows) == ["baseline_fp32.tflite", "baseline_int8.tflite"]
    assert not any(r.get("note") for r in rows.values())     # both in the manifest, as validated


def test_an_export_cleans_up_only_temporaries_of_files_an_export_writes():
    from edgecifar.export.pipeline import is_export_output

    assert all(map(is_export_output, ("baseline_int8.tflite", "m_fp32.onnx", "x_tta_int8.tflite", "edgecifar.json")))
    assert not any(map(is_export_output, ("r.json", "bench.md", "model.keras", "notes.tflite")))
