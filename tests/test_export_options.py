"""Format options (export/formats.py ``Option``): declared in the table, given on the command line, checked once
when they become an ExportConfig (for the command line and the API alike), passed to the writer, and they change
what is written. ``--int8-float-ops N`` keeps the first N operators in float32."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecifar.export.formats import FORMATS, Format, Option, by_key, check_table

from conftest import separable_images


def _ops(content: bytes) -> list[tuple[str, str]]:
    """(operator name, dtype of its weights or 'none') for each operator, in graph order."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    return [(op["op_name"], np.dtype(tensors[op["inputs"][1]]["dtype"]).name
             if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") else "none")
            for op in it._get_ops_details()]


@pytest.fixture(scope="module")
def int8_files(tmp_path_factory):
    """A small untrained convnet written by the int8 writer with float_ops 0 (the default) and 2."""
    import keras

    from edgecifar.export.calibration import full_range
    from edgecifar.export.job import ExportJob
    from edgecifar.export.tflite import write_int8
    from edgecifar.models.layers import classifier, pixels_input

    keras.utils.set_random_seed(0)
    inp = pixels_input()
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu6")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu6")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu6")(x)
    model = keras.Model(inp, classifier(keras.layers.GlobalAveragePooling2D()(x)))
    images, _ = separable_images(40, seed=3)
    job = ExportJob(model, "tiny", full_range(images))
    out = tmp_path_factory.mktemp("int8-options")
    files = {}
    for n in (0, 2):
        write_int8(job, out / f"float{n}.tflite", float_ops=n)
        files[n] = (out / f"float{n}.tflite").read_bytes()
    return files, model, images


def test_int8_declares_float_ops_with_a_default_that_changes_nothing():
    (option,) = by_key("int8").options
    assert (option.name, option.type, option.default) == ("float_ops", int, 0)
    assert by_key("int8").option_flag(option) == "--int8-float-ops"
    assert all(not f.options for f in FORMATS if f.key != "int8")


def test_the_table_refuses_an_option_whose_default_has_the_wrong_type():
    bad = Format("x", "X", ".tflite", "fp16", False, lambda job, dest: None, "x",
                 options=(Option("n", int, "0", "a count"),))
    with pytest.raises(ValueError, match="default"):
        check_table((by_key("fp32"), bad))
    below = Format("x", "X", ".tflite", "fp16", False, lambda job, dest: None, "x",
                   options=(Option("n", int, -1, "a count", min=0),))
    with pytest.raises(ValueError, match="below its min"):
        check_table((by_key("fp32"), below))


def test_float_ops_keeps_the_first_operators_float_and_the_rest_int8(int8_files):
    files, _, _ = int8_files
    assert files[0] != files[2]
    plain, stem = _ops(files[0]), _ops(files[2])
    assert [w for op, w in plain if w != "none"] == ["int8"] * 4           # 3 convs and the dense layer
    assert "DEQUANTIZE" not in [op for op, _ in plain]
    # the rescaling folds into the first conv: the first two operators are the first two convs
    assert [w for op, w in stem if w != "none"] == ["float32", "float32", "int8", "int8"]
    assert stem[0][0] == "DEQUANTIZE" and "QUANTIZE" in [op for op, _ in stem]  # int8 in, float stem, int8 on


def test_float_ops_files_keep_the_int8_contract_and_agree_with_keras(int8_files):
    from ai_edge_litert.interpreter import Interpreter

    files, model, images = int8_files
    reference = np.asarray(model(images.astype(np.float32), training=False))
    for content in files.values():
        it = Interpreter(model_content=content)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        assert inp["dtype"] == np.int8 and inp["quantization"] == (1.0, -128) and out["dtype"] == np.int8
        it.resize_tensor_input(inp["index"], [len(images), 32, 32, 3])
        it.allocate_tensors()
        it.set_tensor(inp["index"], (images.astype(np.int16) - 128).astype(np.int8))
        it.invoke()
        scale, zero = out["quantization"]
        probs = scale * (it.get_tensor(out["index"]).astype(np.float32) - zero)
        assert np.abs(probs - reference).max() < 0.05


def test_float_ops_beyond_the_model_is_one_error_line(int8_files, tmp_path):
    from edgecifar.export.job import ExportFailure, ExportJob
    from edgecifar.export.tflite import write_int8

    _, model, images = int8_files
    from edgecifar.export.calibration import full_range

    with pytest.raises(ExportFailure, match="only .* operators"):
        write_int8(ExportJob(model, "tiny", full_range(images[:12])), tmp_path / "x.tflite", float_ops=500)


def test_the_command_line_passes_int8_float_ops_to_the_int8_format_only():
    from edgecifar.export.command import _format_options

    values = {"int8": True, "fp32": False, "int8_float_ops": 13}
    assert _format_options(values) == {"int8": {"float_ops": 13}}
    assert "int8_float_ops" not in values  # the remaining keywords are the format flags
    assert _format_options({"int8": True, "int8_float_ops": None}) == {}  # not given: the table's default


def test_the_manifest_records_the_options_a_file_was_written_with(tmp_path):
    from types import SimpleNamespace

    from edgecifar.export.manifest import file_entry
    from edgecifar.export.validate import Validation

    path = tmp_path / "m_int8.tflite"
    path.write_bytes(b"x")
    job = SimpleNamespace(labels=("a",) * 10, name="m", input_contract=lambda: {"name": "pixels"})
    result = Validation(10, 0.9, 0.9, 0.0, 1.0, 0.0, "passed")
    assert file_entry(by_key("int8"), path, job, {}, result, None, {"float_ops": 13})["options"] == {"float_ops": 13}
    assert "options" not in file_entry(by_key("fp32"), path, job, {}, result, None, {})


# --------------------------------------------------------------------------- options checked once, before anything is written

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))  # the console script of this venv


def _edgecifar(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGECIFAR, *args], capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single line on stderr of a refused command (exit 2, no traceback, nothing on stdout)."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0].removeprefix("error: ")


def test_int8_float_ops_without_int8_exits_2_with_one_line_and_writes_nothing(untrained_run, tmp_path):
    out = tmp_path / "out"
    for chosen in ((), ("--fp16",)):
        message = _one_error_line(_edgecifar("export", str(untrained_run), *chosen, "--int8-float-ops", "3",
                                             "--out", str(out)))
        assert message == ("--int8-float-ops 3 is an option of --int8, which was not given: "
                           "add --int8 or drop --int8-float-ops")
        assert not out.exists()


def test_a_negative_float_ops_is_refused_with_one_message_by_the_command_line_and_the_api(untrained_run, tmp_path):
    from edgecifar.errors import EdgeCifarError
    from edgecifar.export import pipeline, source

    out = tmp_path / "out"
    message = _one_error_line(_edgecifar("export", str(untrained_run), "--int8", "--int8-float-ops", "-1",
                                         "--out", str(out)))
    assert message == "--int8-float-ops -1: expected 0 or more"
    with pytest.raises(EdgeCifarError) as refused:
        pipeline.run(pipeline.ExportConfig(source.resolve(untrained_run), [by_key("int8")], out=out,
                                           options={"int8": {"float_ops": -1}}))
    assert str(refused.value) == message
    assert not out.exists()


def test_the_api_refuses_options_a_format_does_not_declare_or_was_not_chosen_for(untrained_run):
    from edgecifar.errors import EdgeCifarError
    from edgecifar.export.pipeline import ExportConfig
    from edgecifar.export.source import resolve

    src = resolve(untrained_run)
    with pytest.raises(EdgeCifarError, match="--int8 has no option 'float_opz'; it takes: float_ops"):
        ExportConfig(src, [by_key("int8")], options={"int8": {"float_opz": 3}})
    with pytest.raises(EdgeCifarError, match="--fp16 has no option 'float_ops'"):
        ExportConfig(src, [by_key("fp16")], options={"fp16": {"float_ops": 3}})
    with pytest.raises(EdgeCifarError, match="--int8-float-ops 3 is an option of --int8, which was not given"):
        ExportConfig(src, [by_key("fp32")], options={"int8": {"float_ops": 3}})
    with pytest.raises(EdgeCifarError, match=r"--int8-float-ops '3': expected int"):
        ExportConfig(src, [by_key("int8")], options={"int8": {"float_ops": "3"}})
    assert ExportConfig(src, [by_key("int8")]).options_of(by_key("int8")) == {"float_ops": 0}


@pytest.mark.parametrize("kind", ["flip", "crops"])
def test_float_ops_count_the_networks_operators_in_a_tta_file_too(int8_files, kind, tmp_path):
    """--int8-float-ops 2 keeps the same two convolutions in float with or without TTA: the views' own
    operators come first in the graph and are not counted (export/tta.py ``prefix_ops``)."""
    from edgecifar.export.calibration import full_range
    from edgecifar.export.job import ExportJob
    from edgecifar.export.tflite import write_int8
    from edgecifar.export.tta import TTA, network_options

    _, model, images = int8_files
    job = ExportJob(TTA[kind].wrap(model), "tiny", full_range(images))
    write_int8(job, tmp_path / "tta.tflite", **network_options({"float_ops": 2}, kind))
    weights = [w for op, w in _ops((tmp_path / "tta.tflite").read_bytes()) if w != "none"]
    assert weights == ["float32", "float32", "int8", "int8"]


def test_float_ops_of_a_file_without_tta_or_without_a_float_stem_are_unchanged():
    from edgecifar.export.tta import network_options

    assert network_options({"float_ops": 13}, None) == {"float_ops": 13}
    assert network_options({"float_ops": 0}, "crops") == {"float_ops": 0}
    assert network_options({"float_ops": 13}, "crops") == {"float_ops": 20}
