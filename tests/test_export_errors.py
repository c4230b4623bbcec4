"""``edgecifar export`` on bad input and faults: one clear line, a non-zero exit, nothing half-written;
and a format that fails does not stop the others."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecifar.cli import main
from edgecifar.export import formats


def export_cli(*args: str):
    return CliRunner().invoke(main, ["export", *args])


def assert_one_line_error(result, *fragments: str, code: int = 2) -> None:
    """Exit ``code``, exactly one ``error:`` line naming every fragment, no traceback."""
    text = result.output + result.stderr
    assert result.exit_code == code, text
    assert "Traceback" not in text
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def wrong_shape_model(tmp_path_factory) -> Path:
    """A valid Keras model whose input is 784 flat values (MNIST as vectors), not an image [N, H, W, C]."""
    import keras

    inp = keras.Input((784,), name="pixels")
    out = keras.layers.Dense(10, activation="softmax")(inp)
    path = tmp_path_factory.mktemp("wrong") / "mnist.keras"
    keras.Model(inp, out).save(path)
    return path


def test_no_run_yet_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECIFAR_RUNS", str(tmp_path / "runs"))
    assert_one_line_error(export_cli(), "no trained model", "edgecifar train baseline")


def test_a_path_that_is_not_a_model(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert_one_line_error(export_cli(str(text), "--out", str(tmp_path / "out")), "notes.txt", "not a Keras model")
    assert_one_line_error(export_cli(str(tmp_path), "--out", str(tmp_path / "out")), "not a run directory")
    assert_one_line_error(export_cli(str(tmp_path / "missing.keras")), "no such run directory or .keras file")
    assert not (tmp_path / "out").exists()


def test_a_corrupt_keras_file(tmp_path):
    bad = tmp_path / "model.keras"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip")
    assert_one_line_error(export_cli(str(bad), "--out", str(tmp_path / "out")), "not a loadable Keras model")
    assert files_in(tmp_path / "out") == []


def test_a_model_whose_input_is_not_an_image(wrong_shape_model, synthetic_archive, tmp_path):
    out = tmp_path / "out"
    result = export_cli(str(wrong_shape_model), "--data", str(synthetic_archive), "--out", str(out))
    assert_one_line_error(result, "mnist.keras", "input shape [N, 784] is not an image")
    assert files_in(out) == []


def test_missing_calibration_data(untrained_run, tmp_path):
    out = tmp_path / "out"
    result = export_cli(str(untrained_run), "--int8", "--data", str(tmp_path / "nowhere.tar.gz"), "--out", str(out))
    assert_one_line_error(result, "nowhere.tar.gz", "no CIFAR-10 data")
    assert files_in(out) == []


@pytest.mark.slow
def test_too_few_calibration_images(trained_run, synthetic_archive, tmp_path):
    out = tmp_path / "out"
    result = export_cli(str(trained_run), "--int8", "--calibration", "5", "--data", str(synthetic_archive),
                        "--out", str(out))
    assert_one_line_error(result, "--calibration 5", "at least 10")
    # 400 training images, 50 held out for validation: 350 left to calibrate on
    result = export_cli(str(trained_run), "--all", "--calibration", "1000", "--data", str(synthetic_archive),
                        "--out", str(out))
    assert_one_line_error(result, "calibration needs 1000 images", "only 350")
    assert files_in(out) == []


def test_unwritable_output_folder(untrained_run, synthetic_archive, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = export_cli(str(untrained_run), "--data", str(synthetic_archive), "--out", str(blocker / "export"))
    assert_one_line_error(result, "output folder is not writable")


@pytest.mark.slow
def test_one_failing_format_does_not_stop_the_others(trained_run, synthetic_archive, tmp_path, monkeypatch):
    def boom(job, dest):
        raise RuntimeError("converter exploded\nwith a second line nobody should see")

    def garbage(job, dest):
        dest.write_bytes(b"not a flatbuffer")

    broken = tuple(dataclasses.replace(f, write=boom) if f.key == "fp16"
                   else dataclasses.replace(f, write=garbage) if f.key == "dynamic" else f
                   for f in formats.FORMATS)
    monkeypatch.setattr(formats, "FORMATS", broken)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["export", str(trained_run), "--fp32", "--fp16", "--dynamic", "--data",
                                       str(synthetic_archive), "--out", str(out)])
    assert result.exit_code == 1, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert "converter exploded" in result.stderr and "second line" not in result.stderr
    assert "baseline_dynamic.tflite" in result.stderr and "not a loadable TFLite model" in result.stderr
    # the failed files are not left behind, not even under a temporary name; the good one is
    assert files_in(out) == ["baseline_fp32.tflite", "edgecifar.json"]
    manifest = json.loads((out / "edgecifar.json").read_text())
    assert [f["file"] for f in manifest["files"]] == ["baseline_fp32.tflite"]


def test_int8_export_fails_when_input_scale_is_not_exact():
    """Calibration images that never reach 0 or 255 give a scale other than 1.0: the format must fail."""
    import keras

    from edgecifar.export.job import ExportFailure, ExportJob
    from edgecifar.export.tflite import write_int8

    inp = keras.Input((32, 32, 3), name="pixels")
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp)))
    dim = np.random.default_rng(0).uniform(20, 100, (20, 32, 32, 3)).astype(np.float32)
    with pytest.raises(ExportFailure, match="expected int8 scale 1.0 zero point -128"):
        write_int8(ExportJob(model, "dim", dim), Path("/nonexistent/never-written.tflite"))


def test_calibration_images_span_every_pixel_value(synthetic_archive):
    from edgecifar import data
    from edgecifar.export import calibration

    ds = data.load(synthetic_archive)
    split = calibration.split(ds, val_size=40, n_calibration=30, holdout=50)
    assert split.calibration.min() == 0 and split.calibration.max() == 255
    assert split.calibration.dtype == np.float32 and len(split.calibration) == 30 and len(split.y_val) == 40
    again = calibration.split(ds, val_size=40, n_calibration=30, holdout=50)
    assert np.array_equal(split.calibration, again.calibration)  # deterministic
    # no calibration image is a validation image, and validation images are the ones training held out
    _, held_out = data.stratified_split(ds.y_train, 50, seed=0)
    held = {ds.x_train[i].tobytes() for i in held_out}
    assert all(x.tobytes() in held for x in split.x_val)
    assert not any(x.astype(np.uint8).tobytes() in held for x in split.calibration[1:])


def test_format_table_is_checked_in_one_place():
    formats.check_table()
    with pytest.raises(ValueError, match="duplicate"):
        formats.check_table(formats.FORMATS + (formats.FORMATS[0],))
    with pytest.raises(ValueError, match="bad precision"):
        formats.check_table((dataclasses.replace(formats.FORMATS[0], precision="int4"),))
    assert [f.key for f in formats.select({})] == ["fp32"]
    assert [f.key for f in formats.select({}, everything=True)] == [f.key for f in formats.FORMATS]


def test_every_format_has_its_flag():
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0
    for fmt in formats.FORMATS:
        assert fmt.flag in result.output
    assert "--all" in result.output and "--calibration" in result.output
