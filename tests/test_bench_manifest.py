"""What ``edgecifar bench`` takes from a folder and its ``edgecifar.json``: an export's temporaries and hidden files
are never rows, a file the manifest does not vouch for gets a note, a symlink loop is one error row, and a file
that scores outside the accuracy its manifest records for the same images is flagged, naming this CPU's features."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import SMALL
from edgecifar import data as cifar
from edgecifar import zoo
from edgecifar.bench import core
from edgecifar.cli import main
from edgecifar.fileio import sha256
from edgecifar.host import FEATURES, cpu_features

QUICK = ["--runs", "10", "--warmup", "2", "--limit", "40"]


def bench(*args: str, data: Path):
    return CliRunner().invoke(main, ["bench", *args, *QUICK, "--data", str(data)], catch_exceptions=False)


@pytest.fixture
def export_folder(tmp_path) -> Path:
    """A folder with a copy of a shipped file, as an export leaves it (no manifest yet)."""
    if not (zoo.ZOO_DIR / SMALL).exists():
        pytest.skip(f"{SMALL} is not shipped")
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(zoo.ZOO_DIR / SMALL, folder / SMALL)
    return folder


def write_manifest(folder: Path, entries: list[dict], **header) -> None:
    (folder / core.MANIFEST).write_text(json.dumps({**header, "files": entries}))


def rows_of(out: Path) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in json.loads(out.read_text())["rows"]}


# --------------------------------------------------------------------------- which files are rows

def test_a_folder_scan_skips_the_temporaries_a_killed_export_leaves(export_folder, synthetic_archive, tmp_path):
    (export_folder / ".m_int8.tflite.yc38oavx.tflite").write_bytes(b"")                     # killed at once
    shutil.copy(export_folder / SMALL, export_folder / f".{SMALL}.k2x9_0ab.tflite")         # killed in validation
    (export_folder / ".hidden.onnx").write_bytes(b"\0" * 64)
    out = tmp_path / "r.json"
    result = bench(str(export_folder), "--json", str(out), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    assert list(rows_of(out)) == [SMALL] and rows_of(out)[SMALL]["status"] == "ok"


def test_a_symlink_loop_named_or_in_a_folder_is_one_error_row_not_a_traceback(export_folder, synthetic_archive,
                                                                             tmp_path):
    (export_folder / "loop.tflite").symlink_to("loop.tflite")
    (tmp_path / "alone.onnx").symlink_to(tmp_path / "alone.onnx")
    out = tmp_path / "r.json"
    result = bench(str(export_folder), str(tmp_path / "alone.onnx"), "--json", str(out), data=synthetic_archive)
    assert result.exit_code == 1 and "Traceback" not in result.output
    rows = rows_of(out)
    assert rows[SMALL]["status"] == "ok"
    for name in ("loop.tflite", "alone.onnx"):
        assert rows[name]["status"] == "error" and rows[name]["error"].endswith(f"{name}: symlink loop")
    assert result.stderr.splitlines()[-1] == "2 of 3 rows failed"


# --------------------------------------------------------------------------- files the manifest does not vouch for

def test_a_file_without_a_manifest_entry_or_with_another_sha256_gets_a_note_and_still_runs(
        export_folder, synthetic_archive, tmp_path):
    shutil.copy(export_folder / SMALL, export_folder / "copied_int8.tflite")
    write_manifest(export_folder, [{"file": SMALL, "sha256": "0" * 64}])
    out = tmp_path / "r.json"
    result = bench(str(export_folder), "--json", str(out), data=synthetic_archive)
    assert result.exit_code == 0, result.output
    rows = rows_of(out)
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert rows["copied_int8.tflite"]["note"] == (f"{export_folder / 'copied_int8.tflite'}: no entry in the "
                                                  "edgecifar.json beside it: not validated by an export")
    assert rows[SMALL]["note"] == f"{export_folder / SMALL}: not the file its edgecifar.json entry validated " \
                                  "(sha256 differs)"
    for row in rows.values():
        assert f"note: {row['note']}" in result.stdout


def test_a_file_its_manifest_vouches_for_or_a_folder_without_a_manifest_gets_no_note(export_folder):
    assert core.unvalidated_note(export_folder / SMALL) is None                    # no manifest: nothing claimed
    write_manifest(export_folder, [{"file": SMALL, "sha256": sha256(export_folder / SMALL)}])
    assert core.unvalidated_note(export_folder / SMALL) is None


# --------------------------------------------------------------------------- accuracy against the manifest's

def bench_entry(folder: Path, accuracy: float, images: int, fingerprint: str | None, **extra) -> dict:
    """A manifest entry for the copied file with the bench figure ``accuracy`` on ``images`` test images."""
    return {"file": SMALL, "sha256": sha256(folder / SMALL),
            "bench": {"accuracy": accuracy, "images": images, "data": "cifar-10-python.tar.gz", "device": "cpu",
                      "runtime": "litert", **({"data_fingerprint": fingerprint} if fingerprint else {}), **extra}}


def test_a_file_scoring_outside_its_manifests_interval_on_the_same_images_is_flagged_and_the_true_figure_passes(
        export_folder, synthetic_archive, tmp_path):
    fingerprint = cifar.load(synthetic_archive).fingerprint
    write_manifest(export_folder, [bench_entry(export_folder, 0.975, 40, fingerprint)])    # 39 of 40
    out = tmp_path / "r.json"
    flagged = bench(str(export_folder), "--json", str(out), data=synthetic_archive)
    doc = json.loads(out.read_text())
    row = doc["rows"][0]
    assert row["accuracy"] < 0.8          # a CIFAR-10 model on synthetic stripes: far below the 97.5% claimed
    assert flagged.exit_code == 1 and row["status"] == "mismatch"
    features = ", ".join(cpu_features())
    assert doc["meta"]["cpu_features"] == list(cpu_features())
    assert row["error"] == (f"{export_folder / SMALL}: top-1 {100 * row['accuracy']:.1f}% is outside 87.1–99.6%, "
                            "the 95% interval of the 97.5% its edgecifar.json records for the same 40 test images; "
                            f"measured on cpu, CPU features: {features or 'none of ' + ', '.join(FEATURES)}")
    assert "mismatch" in flagged.stdout and f"{100 * row['accuracy']:.1f}%" in flagged.stdout   # figures still shown
    assert flagged.stderr.splitlines()[-1] == ("1 of 1 row scored outside the accuracy their edgecifar.json records "
                                               "for the same images")

    write_manifest(export_folder, [bench_entry(export_folder, row["accuracy"], 40, fingerprint)])
    passed = bench(str(export_folder), "--json", str(out), data=synthetic_archive)
    assert passed.exit_code == 0, passed.output
    assert rows_of(out)[SMALL]["status"] == "ok"


def measured_row(folder: Path, accuracy: float = 0.5, images: int = 40) -> dict:
    return {"file": str(folder / SMALL), "status": "ok", "accuracy": accuracy, "images": images,
            "device": "cpu", "runtime": "litert"}


def test_figures_on_other_images_or_other_data_are_not_compared(export_folder):
    def mismatch(entry: dict, data: str = "cifar-10-python.tar.gz", fingerprint: str = "f1", **header) -> str | None:
        write_manifest(export_folder, [entry], **header)
        return core.accuracy_mismatch(measured_row(export_folder), core.recorded_accuracy(export_folder / SMALL),
                                      data, fingerprint, "here")

    assert mismatch(bench_entry(export_folder, 0.99, 40, "f1"))                          # same images: flagged
    assert mismatch(bench_entry(export_folder, 0.99, 1000, "f1")) is None                # another count
    assert mismatch(bench_entry(export_folder, 0.99, 40, "f2")) is None                  # another copy of the data
    assert mismatch(bench_entry(export_folder, 0.99, 40, "f1"), data="other.tar.gz") is None
    assert mismatch({**bench_entry(export_folder, 0.99, 40, "f1"), "sha256": "0" * 64}) is None   # another file
    assert mismatch({k: v for k, v in bench_entry(export_folder, 0.99, 40, "f1").items() if k != "bench"}) is None
    # No fingerprint with the figure: the one the manifest records for data of that name, else no comparison
    # (a name alone proves nothing: any archive is called cifar-10-python.tar.gz).
    header = {"validation": {"data": "cifar-10-python.tar.gz", "data_fingerprint": "f1"}}
    assert mismatch(bench_entry(export_folder, 0.99, 40, None), **header)
    assert mismatch(bench_entry(export_folder, 0.99, 40, None), fingerprint="f2", **header) is None
    assert mismatch(bench_entry(export_folder, 0.99, 40, None)) is None


def test_a_figure_inside_the_interval_passes_and_one_just_outside_is_flagged(export_folder):
    write_manifest(export_folder, [bench_entry(export_folder, 0.876, 1000, "f1")])   # interval 85.4–89.5%
    recorded = core.recorded_accuracy(export_folder / SMALL)
    check = lambda acc: core.accuracy_mismatch(measured_row(export_folder, acc, 1000), recorded,  # noqa: E731
                                               "cifar-10-python.tar.gz", "f1", "on cpu, CPU features: avx2")
    assert check(0.876) is None and check(0.855) is None and check(0.894) is None
    assert "top-1 82.2% is outside 85.4–89.5%, the 95% interval of the 87.6%" in check(0.822)
    assert check(0.822).endswith("for the same 1,000 test images; measured on cpu, CPU features: avx2")
    assert check(0.90)
    # Where the manifest's figure was measured, as far as it says: its CPU features, a runtime unlike this row's.
    write_manifest(export_folder, [bench_entry(export_folder, 0.876, 1000, "f1", runtime="onnxruntime",
                                               cpu_features=["avx2", "avx512_vnni"])])
    recorded = core.recorded_accuracy(export_folder / SMALL)
    assert check(0.822).endswith("for the same 1,000 test images (runtime onnxruntime; CPU features: avx2, "
                                 "avx512_vnni); measured on cpu, CPU features: avx2")
