"""Export's quantization doctor (export/doctor.py): ``--explain`` ranks the layers int8 hurts, ``--max-drop`` writes the
cheapest file within a budget, ``--int16x8`` is a format of its own, and ``--json`` holds the whole report.

The models are built here with weights set by hand from the synthetic archive's class colours (mean colour ->
nearest class colour), so nothing trains and their float accuracy is known. One of them is broken on purpose: its
layer ``wide`` carries the colours (values 0..1) beside a channel of 5,000 that nothing reads, so int8's one scale for
that tensor (5,000 / 255) rounds every colour to nothing and int8 guesses one class. Keeping ``wide`` in float (with
``narrow``, which reads it) restores the colours."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecifar import data, micro
from edgecifar.cli import main
from edgecifar.export import doctor
from edgecifar.export.validate import Validation

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))


def colour_model(archive: Path, broken: bool, temperature: float = 20.0):
    """Pixels 0..255 -> ``wide`` (1x1 conv: the colour, plus with ``broken`` a channel of 5,000) -> ``narrow`` (1x1
    conv: the colour back, that channel unread) -> mean -> softmax(T (2 c.k - |k|^2)) over the class colours k."""
    import keras

    ds = data.load(archive)
    centres = np.stack([ds.x_train[ds.y_train == c].mean(axis=(0, 1, 2)) for c in range(10)]).astype(np.float32) / 255
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="to_unit")(inp)
    x = keras.layers.Conv2D(4, 1, name="wide")(x)
    x = keras.layers.Conv2D(3, 1, use_bias=False, name="narrow")(x)
    x = keras.layers.GlobalAveragePooling2D(name="mean")(x)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="head")(x))
    model.get_layer("wide").set_weights([np.eye(3, 4, dtype=np.float32)[None, None],
                                         np.array([0, 0, 0, 5000.0 if broken else 0], np.float32)])
    model.get_layer("narrow").set_weights([np.eye(4, 3, dtype=np.float32)[None, None]])
    model.get_layer("head").set_weights([2 * centres.T * temperature, -(centres ** 2).sum(1) * temperature])
    return model


def chain_model(archive: Path):
    """:func:`colour_model` broken twice in a row: ``narrow`` passes the colours on beside a channel of 5,000 of its
    own, which ``narrow2`` does not read. Keeping either layer in float (with its readers) leaves the other tensor
    quantized to nothing, so no single layer helps and the greedy search keeps none; the first operators, through
    ``narrow2``, in float do."""
    import keras

    base = colour_model(archive, broken=True)
    inp = keras.Input((32, 32, 3), name="image")
    x = base.get_layer("wide")(base.get_layer("to_unit")(inp))
    x = keras.layers.Conv2D(4, 1, name="narrow")(x)
    x = keras.layers.Conv2D(3, 1, use_bias=False, name="narrow2")(x)
    model = keras.Model(inp, base.get_layer("head")(base.get_layer("mean")(x)))
    model.get_layer("narrow").set_weights([np.diag([1, 1, 1, 0]).astype(np.float32)[None, None],
                                           np.array([0, 0, 0, 5000.0], np.float32)])
    model.get_layer("narrow2").set_weights([np.eye(4, 3, dtype=np.float32)[None, None]])
    return model


def export_cli(*args):
    """``edgecifar export ARGS`` in this process, the tables whole whatever the terminal (no COLUMNS)."""
    return CliRunner().invoke(main, ["export", *map(str, args)], env={"COLUMNS": None})


def entries(out: Path) -> dict[str, dict]:
    return {e["file"]: e for e in json.loads((out / "edgecifar.json").read_text())["files"]}


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def broken_export(synthetic_archive, tmp_path_factory):
    """``export --int8 --onnx-int8 --explain --max-drop 1 --json`` of the broken model, once for the module."""
    work = tmp_path_factory.mktemp("doctor")
    colour_model(synthetic_archive, broken=True).save(work / "broken.keras")
    out, report = work / "out", work / "reports" / "doctor.json"
    result = export_cli(work / "broken.keras", "--int8", "--onnx-int8", "--explain", "--max-drop", 1,
                        "--calibration", 100, "--data", synthetic_archive, "--out", out, "--json", report)
    assert result.exit_code == 0, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    return out, json.loads(report.read_text()), result


# --------------------------------------------------------------------------- the report

@pytest.mark.slow
def test_the_report_ranks_the_layer_whose_range_one_channel_dominates_first_and_keeping_it_recovers_the_accuracy(
        broken_export):
    out, report, result = broken_export
    tflite = next(e for e in report["explanations"] if e["format"] == "TFLite int8")
    assert tflite["file"] == "broken_int8.tflite" and tflite["full_int8"]["drop"] > 50   # int8 guesses one class
    first = tflite["layers"][0]
    assert first["rank"] == 1 and "wide" in first["name"] and first["op"] == "CONV_2D"
    # the whole tensor looks fine (the 5,000 channel is its signal); its typical channel is noise
    assert first["metrics"]["sqnr_db"] > 40 and first["metrics"]["channel_sqnr_db"] < 3
    assert {"num_elements", "mean_squared_error", "max_abs_error", "rmse", "rmse_per_step", "scale"} <= set(
        first["metrics"])                                                    # the debugger's own, and ours
    assert first["recovered"] > 50 and first["drop"] <= 1                  # kept in float, the colours come back
    assert any("narrow" in kept for kept in first["keeps"])               # with the layer that reads it
    assert len(tflite["layers"]) >= 4 and all("recovered" in layer for layer in tflite["layers"])
    # the terminal names the top offenders, the worst first
    table = result.output[result.output.index("TFLite int8: the layers int8 hurts most"):]
    assert table.index("wide") < table.index("narrow")


@pytest.mark.slow
def test_the_onnx_int8_format_gets_the_same_report_from_onnxruntimes_qdq_loss_debug(broken_export):
    _, report, result = broken_export
    onnx = next(e for e in report["explanations"] if e["format"] == "ONNX int8")
    assert onnx["file"] == "broken_int8.onnx" and onnx["full_int8"]["drop"] > 50
    first = onnx["layers"][0]
    assert "wide" in first["name"] and first["metrics"]["channel_sqnr_db"] < 3
    assert {"sqnr_db", "model_sqnr_db"} <= set(first["metrics"])
    assert first["recovered"] > 50                                          # nodes_to_exclude: that layer in float
    assert "ONNX int8: the layers int8 hurts most" in result.output


# --------------------------------------------------------------------------- --max-drop

@pytest.mark.slow
def test_max_drop_writes_a_mixed_file_that_keeps_the_broken_layer_in_float_and_meets_the_budget(broken_export):
    out, report, result = broken_export
    files = entries(out)
    mixed, int8 = files["broken_mixed_int8.tflite"], files["broken_int8.tflite"]
    assert mixed["precision"] == "mixed_int8" and mixed["kept_in_float"] == [report["kept_in_float"][0]]
    assert "wide" in mixed["kept_in_float"][0]
    assert mixed["validation"]["drop"] <= 1 and mixed["validation"]["status"] == "passed"
    assert (mixed["input"]["dtype"], mixed["input"]["scale"], mixed["input"]["zero_point"]) == ("int8", 1.0, -128)
    against = mixed["against_int8"]
    assert against["file"] == "broken_int8.tflite" and against["drop"] == int8["validation"]["drop"] > 50
    assert against["bytes"] == (out / "broken_int8.tflite").stat().st_size
    assert mixed["latency_ms"] > 0 and int8["latency_ms"] > 0 and against["latency_ms"] == int8["latency_ms"]
    head = json.loads((out / "edgecifar.json").read_text())["max_drop"]
    assert head["budget"] == 1 and head["met"] and head["chosen"] == "broken_mixed_int8.tflite"
    assert report["max_drop"]["met"] and len(report["max_drop"]["trials"]) == 1   # the first layer tried met it
    assert "broken_mixed_int8.tflite keeps 1 layer in float" in result.output
    # the file alone runs, and its validation is the doctor's trial: same bytes, same images
    assert report["max_drop"]["chosen"]["drop"] == mixed["validation"]["drop"]


@pytest.mark.slow
def test_max_drop_keeps_a_float_prefix_when_the_error_compounds_over_layers_no_single_one_of_which_recovers_it(
        synthetic_archive, tmp_path):
    chain_model(synthetic_archive).save(tmp_path / "chain.keras")
    out, report = tmp_path / "out", tmp_path / "doctor.json"
    result = export_cli(tmp_path / "chain.keras", "--int8", "--max-drop", 1, "--strict", "--calibration", 100,
                        "--data", synthetic_archive, "--out", out, "--json", report)
    assert result.exit_code == 0, result.output + result.stderr
    trials = json.loads(report.read_text())["max_drop"]["trials"]
    layers = [t for t in trials if not t["float_prefix_ops"]]
    assert layers and all(t["drop"] is None or t["drop"] > 50 for t in layers)   # no single layer helps
    prefixes = [t["float_prefix_ops"] for t in trials if t["float_prefix_ops"]]
    assert prefixes[:2] == [1, 2]                                         # a gallop from the first operator
    mixed = entries(out)["chain_mixed_int8.tflite"]
    n = mixed["float_prefix_ops"]                                         # the fewest that meet the budget
    assert n == min(t["float_prefix_ops"] for t in trials if t["float_prefix_ops"] and t["drop"] is not None
                    and t["drop"] <= 1)
    assert len(mixed["kept_in_float"]) == n and "wide" in mixed["kept_in_float"][0]
    assert any("narrow2" in name for name in mixed["kept_in_float"])      # through the second broken layer
    assert mixed["validation"]["drop"] <= 1 and mixed["input"]["dtype"] == "int8"
    assert json.loads((out / "edgecifar.json").read_text())["max_drop"]["float_prefix_ops"] == n
    assert f"chain_mixed_int8.tflite keeps its first {n} operators in float" in result.output


@pytest.mark.slow
def test_max_drop_keeps_full_int8_that_already_meets_the_budget_without_computing_statistics(synthetic_archive,
                                                                                           tmp_path):
    colour_model(synthetic_archive, broken=False).save(tmp_path / "sound.keras")
    report = tmp_path / "doctor.json"
    result = export_cli(tmp_path / "sound.keras", "--int8", "--max-drop", 1, "--strict", "--calibration", 100,
                        "--data", synthetic_archive, "--out", tmp_path / "out", "--json", report)
    assert result.exit_code == 0, result.output + result.stderr
    assert "--max-drop 1: full int8 drops" in result.output and "within it" in result.output
    assert "QuantizationDebugger" not in result.output                     # no per-layer statistics were needed
    assert not (tmp_path / "out" / "sound_mixed_int8.tflite").exists()
    head = json.loads((tmp_path / "out" / "edgecifar.json").read_text())["max_drop"]
    assert head["met"] and head["chosen"] == "sound_int8.tflite"                  # the full int8 file is the answer
    found = json.loads(report.read_text())
    assert found["explanations"] == [] and found["max_drop"]["trials"] == []


@pytest.mark.slow
def test_strict_fails_in_one_line_when_no_file_can_meet_the_budget(synthetic_archive, tmp_path):
    """A head so cold that every probability is within one int8 output step of the others: any file with an int8
    output answers class 0 (ties), so no layer kept in float brings it within 0 points of Keras."""
    colour_model(synthetic_archive, broken=False, temperature=0.01).save(tmp_path / "cold.keras")
    result = export_cli(tmp_path / "cold.keras", "--int8", "--max-drop", 0, "--strict", "--calibration", 100,
                        "--data", synthetic_archive, "--out", tmp_path / "out")
    assert result.exit_code == 1, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr
    (line,) = error_lines(result)
    assert line.startswith("error: --max-drop 0: no file within 0 points of the Keras model") and "(--strict)" in line
    assert (tmp_path / "out" / "cold_int8.tflite").is_file()   # the files are still written, as --strict does


def test_the_search_keeps_full_int8_within_the_budget_else_adds_layers_by_the_accuracy_each_recovered():
    def drop(points: float | None) -> Validation:
        return Validation(100, None, None, points, None, None, "passed")

    def layer(name: str, recovered: float | None) -> doctor.Layer:
        return doctor.Layer(name, "CONV_2D", {}, recovered=recovered)

    ranked = [layer("a", 0.1), layer("b", 2.0), layer("c", None), layer("d", 0.5)]
    table = {("b",): 1.0, ("b", "d"): 1.2, ("b", "a"): 0.4, ("b", "a", "c"): 0.1}
    tried = []

    def keep(kept):
        tried.append(kept)
        return drop(table[kept])

    assert doctor.search(drop(0.3), 0.5, ranked, keep).chosen is None and not tried   # full int8 is the answer
    found = doctor.search(drop(3.0), 0.5, ranked, keep)
    # b recovered most, d did not help (not kept), a met the budget: c, untried alone, never needed
    assert tried == [("b",), ("b", "d"), ("b", "a")]
    assert found.met and found.chosen.kept == ("b", "a") and len(found.trials) == 3
    tried.clear()
    never = doctor.search(drop(3.0), 0.0, ranked, keep)
    assert not never.met and never.chosen.kept == ("b", "a", "c") and tried[-1] == ("b", "a", "c")


def test_when_no_layers_meet_the_budget_the_search_keeps_the_fewest_first_operators_in_float():
    def drop(points: float | None) -> Validation:
        return Validation(100, None, None, points, None, None, "passed")

    single = {("a",): 5.0, ("b",): 2.5}                  # b helps a little, not enough
    prefix = {n: (4.0 if n < 13 else 0.3) for n in range(1, 41)}   # the error starts in the first 13 operators
    tried = []

    def keep_prefix(n):
        tried.append(n)
        return drop(prefix[n])

    layers = [doctor.Layer("a", "CONV_2D", {}), doctor.Layer("b", "CONV_2D", {})]
    found = doctor.search(drop(3.0), 0.5, layers, lambda kept: drop(single[kept[-1:]]), keep_prefix=keep_prefix,
                          operators=40)
    assert tried == [1, 2, 4, 8, 16, 12, 14, 13]          # a gallop to 16, then a bisection between 8 and 16
    assert found.met and found.chosen.prefix == 13 and found.chosen.kept == ()
    assert [t.prefix for t in found.trials] == [0, 0, *tried]   # the layers first, as the report ranks them
    tried.clear()
    none = doctor.search(drop(3.0), 0.5, layers, lambda kept: drop(single[kept[-1:]]),
                         keep_prefix=lambda n: drop(9.0), operators=5)
    assert not none.met and none.chosen.kept == ("b",) and [t.prefix for t in none.trials][-1] == 5  # b stays best
    closer = doctor.search(drop(3.0), 0.5, layers, lambda kept: drop(single[kept[-1:]]),
                           keep_prefix=lambda n: drop({1: 2.0, 2: 1.0}.get(n)), operators=4)
    assert not closer.met and closer.chosen.prefix == 2     # over the budget, but the closest file: 4 did not validate
    assert doctor.search(drop(3.0), 0.5, layers, lambda kept: drop(single[kept[-1:]]), keep_prefix=keep_prefix,
                         operators=0).chosen.kept == ("b",)   # a model without operators has no prefix to try
    capped = doctor.search_prefix(0.5, 1000, keep_prefix=lambda n: drop(0.0 if n >= 700 else 1.0), max_trials=12)
    assert len(capped) == 12 and capped[-1].prefix > 512   # the budget of files bounds a long bisection


def test_a_channel_that_sets_the_range_hides_from_the_whole_tensor_sqnr_but_not_from_the_channel_median():
    rng = np.random.default_rng(0)
    f = np.concatenate([rng.uniform(0, 1, (64, 3)), np.full((64, 1), 5000.0)], axis=1)
    scale = 5000 / 255
    q = np.round(f / scale) - 128
    assert doctor.sqnr_db(f, q, scale, -128) > 40
    assert doctor.channel_sqnr_db(f, q, scale, -128) < 1
    fine = np.round(f[:, :3] / (1 / 255)) - 128
    assert doctor.channel_sqnr_db(f[:, :3], fine, 1 / 255, -128) > 30
    assert math.isnan(doctor.channel_sqnr_db(np.zeros((4, 2)), np.zeros((4, 2)), 0.1, 0))   # silence ranks last
    assert doctor.severity({"sqnr_db": math.nan}) == math.inf


# --------------------------------------------------------------------------- 16x8

@pytest.mark.slow
def test_the_16x8_file_validates_takes_int16_pixels_benches_in_litert_and_runs_in_tflite_micro(
        synthetic_archive, tmp_path):
    colour_model(synthetic_archive, broken=False).save(tmp_path / "colours.keras")
    out = tmp_path / "out"
    result = export_cli(tmp_path / "colours.keras", "--int16x8", "--calibration", 100, "--data", synthetic_archive,
                        "--out", out)
    assert result.exit_code == 0, result.output + result.stderr
    entry = entries(out)["colours_int16x8.tflite"]
    assert entry["precision"] == "int16x8" and entry["validation"]["status"] == "passed"
    assert (entry["input"]["dtype"], entry["input"]["zero_point"], entry["input"]["range"]) == ("int16", 0, [0, 255])
    assert entry["output"]["dtype"] == "int16"
    if micro.installed():
        assert entry["micro"]["runs"] is True and entry["micro"]["arena_bytes"] > 0
    report = tmp_path / "bench.json"
    proc = subprocess.run([EDGECIFAR, "bench", str(out / "colours_int16x8.tflite"), "--data", str(synthetic_archive),
                           "--runs", "10", "--warmup", "2", "--json", str(report)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(report.read_text())["rows"]
    assert row["status"] == "ok" and row["runtime"] == "litert" and row["precision"] == "int16x8"
    assert row["accuracy"] >= entry["validation"]["accuracy"] - 0.1 and row["latency_ms"] > 0
    if micro.installed():
        proc = subprocess.run([EDGECIFAR, "bench", str(out / "colours_int16x8.tflite"), "--device", "mcu",
                               "--limit", "20", "--data", str(synthetic_archive), "--json", str(report)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (row,) = json.loads(report.read_text())["rows"]
        assert row["status"] == "ok" and row["runtime"] == "tflite-micro" and row["arena_bytes"] > 0


# --------------------------------------------------------------------------- refusals and --json

@pytest.mark.parametrize("args, fragment", [
    (("--fp32", "--explain"), "--explain reports on an int8 format: add --int8"),
    (("--onnx-int8", "--max-drop", "1"), "--max-drop 1 searches from the full int8 TFLite file: add --int8"),
    (("--int8", "--int8-float-ops", "3", "--max-drop", "1"), "--int8-float-ops changes: give one of them"),
    (("--int8", "--json", "r.json"), "--json r.json: the report it writes is --explain's or --max-drop's"),
])
def test_doctor_flags_without_what_they_need_are_refused_in_one_line(untrained_run, tmp_path, args, fragment):
    result = export_cli(untrained_run, *args, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output + result.stderr
    (line,) = error_lines(result)
    assert fragment in line and "Traceback" not in result.output + result.stderr
    assert not (tmp_path / "out").exists()


def test_an_unwritable_json_path_is_refused_before_anything_is_converted(untrained_run, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = export_cli(untrained_run, "--int8", "--explain", "--json", blocker / "report.json",
                        "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output + result.stderr
    (line,) = error_lines(result)
    assert "--json" in line and "a_file" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_json_report_is_written_whole_under_its_name_with_no_temporary_left(broken_export):
    out, report, _ = broken_export
    folder = out.parent / "reports"
    assert [p.name for p in folder.iterdir()] == ["doctor.json"]          # atomic: no .doctor.json.* temporary
    assert report["name"] == "broken" and report["measure"] == "accuracy" and report["keras_accuracy"] > 0.9
    assert {e["format"] for e in report["explanations"]} == {"TFLite int8", "ONNX int8"}
    assert report["max_drop"]["budget"] == 1 and report["failures"] == []
