"""``edgecifar bench`` outputs that tell the truth: files of the same name get rows and confusion matrices of
their own, no output replaces another, zoo names and run folders resolve, headers and footers come from the
settings that ran, counts have their plurals, and the JSON says which CPU and runtime versions measured."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SMALL, small_model
from edgecifar import zoo
from edgecifar.cli import main

QUICK = ["--runs", "10", "--warmup", "2", "--limit", "40"]


def bench(*args: str, data: Path):
    return CliRunner().invoke(main, ["bench", *args, "--data", str(data)], catch_exceptions=False)


@pytest.mark.slow
def test_two_files_of_the_same_name_get_their_own_rows_and_confusion_matrices(bench_models, synthetic_archive,
                                                                               tmp_path):
    for folder, source in (("a", "tiny_int8.tflite"), ("b", "tiny_fp32.tflite")):
        (tmp_path / folder).mkdir()
        shutil.copy(bench_models / source, tmp_path / folder / "model_int8.tflite")
    conf, md = tmp_path / "confusion", tmp_path / "bench.md"
    result = bench(str(tmp_path / "a" / "model_int8.tflite"), str(tmp_path / "b" / "model_int8.tflite"), *QUICK,
                   "--confusion", str(conf), "--markdown", str(md), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in conf.glob("*.png")) == ["a_model_int8_tflite.png", "b_model_int8_tflite.png"]
    for name in ("a/model_int8.tflite", "b/model_int8.tflite"):
        assert f"{name}: most confused" in result.stdout
        assert f"| {name} |" in md.read_text()
        assert name in result.stdout.split("most confused")[0]          # the table row


@pytest.mark.slow
def test_one_run_never_writes_two_of_its_outputs_to_the_same_file(bench_models, synthetic_archive, tmp_path):
    same = tmp_path / "out.txt"
    result = bench(str(bench_models / "tiny_int8.tflite"), *QUICK, "--json", str(same), "--csv", str(same),
                   data=synthetic_archive)
    assert result.exit_code == 2 and not same.exists()
    assert result.stderr == f"error: {same}: named by both --json and --csv; give each its own file\n"


@pytest.mark.slow
def test_a_run_folder_is_benched_through_its_export_folder(bench_models, synthetic_archive, tmp_path):
    run = tmp_path / "runs" / "baseline-seed0"
    (run / "export").mkdir(parents=True)
    shutil.copy(bench_models / "tiny_int8.tflite", run / "export" / "baseline_int8.tflite")
    out = tmp_path / "r.json"
    result = bench(str(run), *QUICK, "--json", str(out), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["file"], r["status"]) for r in rows] == [(str(run / "export" / "baseline_int8.tflite"), "ok")]


def test_a_zoo_file_is_benched_by_the_name_edgecifar_zoo_lists(synthetic_archive, tmp_path, monkeypatch):
    shipped = [e["file"] for e in zoo.load_manifest().get("files", []) if e["file"].endswith(".tflite")]
    if not shipped:
        pytest.skip("no models shipped yet")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.json"
    result = bench(shipped[0], *QUICK, "--json", str(out), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["rows"][0]
    assert row["file"] == str(zoo.ZOO_DIR / shipped[0]) and row["status"] == "ok"


@pytest.mark.slow
def test_headers_and_footers_come_from_the_settings_that_ran(bench_models, synthetic_archive, tmp_path):
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    result = bench(str(bench_models / "tiny_int8.tflite"), "--runs", "3", "--blocks", "5", "--batch", "7",
                   "--warmup", "1", "--limit", "40", "--json", str(out), "--markdown", str(md), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["meta"]["blocks"] == doc["rows"][0]["blocks"] == 3 and doc["rows"][0]["batch"] == 7
    assert "3 runs in 3 blocks after 1 warm-up" in result.stderr
    assert "lat ms = median of 3 block medians of 3 batch-1 runs" in result.stdout
    assert "img/s @7" in result.stdout and "img/s @32" not in result.stdout
    assert "median of 3 block medians of 3 runs" in md.read_text() and "throughput at batch 7" in md.read_text()


@pytest.mark.slow
def test_counts_of_one_are_singular(bench_models, synthetic_archive):
    result = bench(str(bench_models / "tiny_int8.tflite"), "--runs", "10", "--warmup", "1", "--limit", "1",
                   data=synthetic_archive)
    assert result.exit_code == 0, result.output
    assert "bench: 1 file x threads 1 on cpu; 1 test image from " in result.stderr
    assert f"  {bench_models / 'tiny_int8.tflite'} (1 thread): ok" in result.stderr
    assert "(1 test image)" in result.stdout
    assert "(s)" not in result.output and "1 test images" not in result.output


@pytest.mark.slow
def test_bench_json_records_the_cpu_and_the_runtime_versions(bench_models, synthetic_archive, tmp_path):
    out = tmp_path / "r.json"
    result = bench(str(bench_models / "tiny_int8.tflite"), str(bench_models / "tiny_fp32.onnx"), *QUICK,
                   "--json", str(out), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    meta = json.loads(out.read_text())["meta"]
    cpuinfo = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.lower().startswith("model name")]
    assert meta["cpu"] == cpuinfo[0]                                 # what lscpu calls "Model name"
    assert meta["versions"]["ai-edge-litert"] == metadata.version("ai-edge-litert")
    assert meta["versions"]["onnxruntime"] == metadata.version("onnxruntime")


@pytest.mark.slow
def test_json_and_csv_name_a_file_under_home_by_its_tilde_path_not_one_machines_home(
        bench_models, synthetic_archive, tmp_path, monkeypatch):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (home / "runs").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(bench_models / "tiny_int8.tflite", home / "runs" / "m_int8.tflite")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(elsewhere)
    out, csv_out = tmp_path / "r.json", tmp_path / "r.csv"
    result = bench(str(home / "runs" / "m_int8.tflite"), *QUICK, "--json", str(out), "--csv", str(csv_out),
                   data=synthetic_archive)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [r["file"] for r in doc["rows"]] == ["~/runs/m_int8.tflite"]
    assert "~/runs/m_int8.tflite" in csv_out.read_text() and str(home) not in csv_out.read_text()


# --------------------------------------------------------------------------- outputs checked before the work

def unwritable(case: str, tmp_path: Path, name: str) -> Path:
    """An output path no one can write, root included (chmod does not stop root)."""
    if case == "parent is a file":
        (tmp_path / "a-file").write_text("")
        return tmp_path / "a-file" / name
    if case == "a pipe":
        os.mkfifo(tmp_path / name)   # the atomic rename would replace it, as it would /dev/null
        return tmp_path / name
    return Path("/proc/self") / name


OUTPUTS = [("--json", "r.json"), ("--csv", "r.csv"), ("--markdown", "r.md"), ("--plot", "r.png"),
           ("--confusion", "confusion")]
#: Every output and every case, but a pipe for --confusion: click refuses a non-folder there already.
UNWRITABLE = [(flag, name, case) for flag, name in OUTPUTS
              for case in ("parent is a file", "a pipe", "under /proc/self")
              if not (case == "a pipe" and flag == "--confusion")]


@pytest.mark.parametrize("flag, name, case", UNWRITABLE)
def test_an_unwritable_output_stops_bench_before_anything_is_measured(flag, name, case, synthetic_archive, tmp_path):
    out = unwritable(case, tmp_path, name)
    result = bench(str(small_model()), *QUICK, flag, str(out), data=synthetic_archive)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {flag} {out}: ") and result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == "" and "Traceback" not in result.output   # no worker started, no table


def full_tmpfs(folder: Path) -> Path:
    """A 64 KiB tmpfs at ``folder``, filled: files can be created there, not written (ENOSPC)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with open(folder / "filler", "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    return folder


def test_a_full_disk_after_the_measurement_is_one_line_per_file_and_exit_1_after_the_table(synthetic_archive,
                                                                                          tmp_path):
    full = full_tmpfs(tmp_path / "full")
    try:
        md = tmp_path / "r.md"
        result = bench(str(small_model()), *QUICK, "--json", str(full / "r.json"), "--csv", str(full / "r.csv"),
                       "--markdown", str(md), data=synthetic_archive)
        left = sorted(p.name for p in full.iterdir())
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert result.exit_code == 1, result.output
    assert SMALL in result.stdout and "lat ms = median of" in result.stdout          # the table reached the screen
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --json {full / 'r.json'}: not written (No space left on device)",
                      f"error: --csv {full / 'r.csv'}: not written (No space left on device)"]
    assert "Traceback" not in result.output and left == ["filler"]                    # nothing half-written
    assert md.read_text().startswith("40 test images") and f"wrote {md}" in result.stderr   # the others still written
