"""``edgecifar export``: every format from one real (tiny) training run, exported once per module and
checked the way a device uses it: in a subprocess that never imports TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from edgecifar import LABELS
from edgecifar.cli import main

pytestmark = pytest.mark.slow

EXPECTED_FILES = ["baseline_fp32.tflite", "baseline_fp16.tflite", "baseline_dynamic.tflite",
                  "baseline_int8.tflite", "baseline_int16x8.tflite", "baseline_fp32.onnx", "baseline_int8.onnx"]


def export_cli(*args: str):
    """``edgecifar export ARGS``, captured as a log would be: without COLUMNS, whatever terminal pytest runs in, the
    results table is printed whole (edgecifar.tables.output_console), so the tests read every column of it."""
    return CliRunner().invoke(main, ["export", *args], env={"COLUMNS": None})


@pytest.fixture(scope="module")
def exported(trained_run, synthetic_archive, tmp_path_factory):
    """``export --all`` of the synthetic baseline run, once for the whole module."""
    out = tmp_path_factory.mktemp("export") / "all"
    result = export_cli(str(trained_run), "--all", "--calibration", "100", "--data", str(synthetic_archive),
                        "--out", str(out))
    assert result.exit_code == 0, result.output + result.stderr
    return out, result


@pytest.fixture(scope="module")
def synthetic_images(synthetic_archive):
    """Every image of the synthetic archive (500) and the Keras model's scores on them."""
    from edgecifar import data

    ds = data.load(synthetic_archive)
    return np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])


@pytest.fixture(scope="module")
def keras_scores(trained_run, synthetic_images):
    import keras

    model = keras.saving.load_model(trained_run / "model.keras", compile=False)
    x, _ = synthetic_images
    return np.asarray(model(x.astype(np.float32), training=False))


@pytest.fixture(scope="module")
def device_scores(exported, synthetic_images, tmp_path_factory):
    """Each file's scores from a fresh Python that imports edgecifar.runtime only, never TensorFlow."""
    out, _ = exported
    work = tmp_path_factory.mktemp("device")
    np.save(work / "x.npy", synthetic_images[0])
    script = textwrap.dedent(f"""
        import sys, json
        import numpy as np
        from edgecifar import runtime
        x = np.load({str(work / 'x.npy')!r})
        scores, quant = {{}}, {{}}
        for name in {EXPECTED_FILES!r}:
            model = runtime.load({str(out)!r} + "/" + name)
            scores[name] = model.predict(x)
            q = getattr(model, "input_quant", None)
            quant[name] = None if q is None else [float(q.scale), int(q.zero_point), str(q.dtype)]
        np.savez({str(work / 'scores.npz')!r}, **scores)
        assert "tensorflow" not in sys.modules, "runtime imported TensorFlow"
        print(json.dumps(quant))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    quant = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(work / "scores.npz") as npz:
        return {k: npz[k] for k in npz.files}, quant


def test_export_all_writes_every_format_and_a_manifest(exported):
    out, result = exported
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(EXPECTED_FILES + ["edgecifar.json"])  # and no temporary files left
    manifest = json.loads((out / "edgecifar.json").read_text())
    assert [f["file"] for f in manifest["files"]] == EXPECTED_FILES
    assert all(f["validation"]["status"] == "passed" for f in manifest["files"])
    for name in ("baseline_int8.tflite", "baseline_fp32.onnx"):
        assert name in result.output


def test_manifest_has_the_shape_the_bench_reads(exported, trained_run):
    out, _ = exported
    m = json.loads((out / "edgecifar.json").read_text())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert m["source"]["model"] == str(trained_run / "model.keras")
    assert len(m["source"]["sha256"]) == 16
    assert m["source"]["recipe"] == "baseline"
    assert m["source"]["parameters"] == metrics["parameters"] and m["source"]["macs"] == metrics["macs"]
    assert m["source"]["data_fingerprint"] == metrics["data"]["fingerprint"]
    assert m["calibration"]["images"] == 100 and m["calibration"]["seed"] == 0
    assert m["calibration"]["data"] == m["validation"]["data"] == "cifar-10-python.tar.gz"
    assert m["validation"]["data_fingerprint"] == metrics["data"]["fingerprint"]  # named, not located
    assert m["validation"]["images"] == 50  # the run held out 50 images; export validates on those
    assert 0 <= m["validation"]["keras_accuracy"] <= 1
    by_file = {f["file"]: f for f in m["files"]}
    for entry in m["files"]:
        assert entry["bytes"] == (out / entry["file"]).stat().st_size and len(entry["sha256"]) == 64
        assert entry["model"] == "baseline" and entry["labels"] == list(LABELS)
        assert entry["input"]["name"] == "pixels" and entry["input"]["shape"] == [-1, 32, 32, 3]
        assert entry["input"]["layout"] == "NHWC" and entry["input"]["range"] == [0, 255]
        assert entry["output"]["meaning"] == "probabilities" and entry["output"]["labels"] == list(LABELS)
        v = entry["validation"]
        assert set(v) >= {"images", "accuracy", "keras_accuracy", "drop", "agreement", "max_abs_diff", "status",
                          "error"}
        assert v["error"] is None and v["images"] == 50
    assert {(f["format"], f["precision"], f["runtime"]) for f in m["files"]} == {
        ("tflite", "fp32", "litert"), ("tflite", "fp16", "litert"), ("tflite", "dynamic", "litert"),
        ("tflite", "int8", "litert"), ("tflite", "int16x8", "litert"), ("onnx", "fp32", "onnxruntime"),
        ("onnx", "int8", "onnxruntime")}
    int8 = by_file["baseline_int8.tflite"]
    assert (int8["input"]["dtype"], int8["input"]["scale"], int8["input"]["zero_point"]) == ("int8", 1.0, -128)
    assert int8["output"]["dtype"] == "int8"
    assert by_file["baseline_fp32.onnx"]["input"]["dtype"] == "float32"


def test_fp32_files_match_keras_without_tensorflow(device_scores, keras_scores):
    scores, _ = device_scores
    for name in ("baseline_fp32.tflite", "baseline_fp32.onnx"):
        assert np.max(np.abs(scores[name] - keras_scores)) < 1e-4, name


def test_every_file_agrees_with_keras_without_tensorflow(device_scores, keras_scores):
    scores, _ = device_scores
    for name in EXPECTED_FILES:
        agreement = np.mean(np.argmax(scores[name], 1) == np.argmax(keras_scores, 1))
        assert agreement >= 0.95, f"{name}: top-1 agreement {agreement:.3f}"


def test_int8_input_represents_every_pixel_exactly(device_scores):
    _, quant = device_scores
    assert quant["baseline_int8.tflite"] == [1.0, -128, "int8"]


def test_int8_tflite_has_int8_input_output_and_conv_weights(exported):
    from ai_edge_litert.interpreter import Interpreter

    out, _ = exported
    it = Interpreter(model_path=str(out / "baseline_int8.tflite"))
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    assert inp["dtype"] == np.int8 and outp["dtype"] == np.int8
    assert inp["quantization"] == (1.0, -128)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    convs = [op for op in it._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert convs, "no convolution in the int8 file"
    for op in convs:
        assert tensors[op["inputs"][1]]["dtype"] == np.int8, op


def test_onnx_files_carry_labels_contract_and_pinned_opset(exported):
    import onnx

    from edgecifar.export.onnx import OPSET

    out, _ = exported
    for name, precision in (("baseline_fp32.onnx", "fp32"), ("baseline_int8.onnx", "int8")):
        proto = onnx.load(out / name)
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["labels"]) == list(LABELS)
        assert json.loads(meta["input"])["layout"] == "NHWC" and meta["precision"] == precision
        (inp,) = proto.graph.input
        dims = inp.type.tensor_type.shape.dim
        assert inp.name == "pixels" and [d.dim_value for d in dims[1:]] == [32, 32, 3]
        assert not dims[0].dim_value  # dynamic batch
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == OPSET
    ops = {n.op_type for n in onnx.load(out / "baseline_int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_reexport_merges_manifest_entries_by_file_name(exported, trained_run, synthetic_archive, tmp_path):
    out, _ = exported
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    result = export_cli(str(trained_run), "--fp16", "--data", str(synthetic_archive), "--out", str(copy))
    assert result.exit_code == 0, result.output + result.stderr
    m = json.loads((copy / "edgecifar.json").read_text())
    assert [f["file"] for f in m["files"]] == EXPECTED_FILES
    assert m["calibration"]["images"] == 100  # the int8 files' calibration is still described


def test_no_format_flag_means_fp32_next_to_the_newest_run(trained_run, synthetic_archive, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    run = runs / "copied-run"
    run.mkdir(parents=True)
    for name in ("model.keras", "metrics.json"):
        shutil.copy(trained_run / name, run / name)
    monkeypatch.setenv("EDGECIFAR_RUNS", str(runs))
    result = export_cli("--data", str(synthetic_archive))
    assert result.exit_code == 0, result.output + result.stderr
    assert sorted(p.name for p in (run / "export").iterdir()) == ["baseline_fp32.tflite", "edgecifar.json"]


@pytest.mark.slow
def test_tta_export_averages_the_image_and_its_mirror_and_doubles_the_macs(trained_run, tmp_path):
    import keras

    from edgecifar import runtime

    out = tmp_path / "tta"
    result = subprocess.run([sys.executable, "-m", "edgecifar", "export", str(trained_run), "--fp32", "--tta",
                             "--out", str(out), "--val-size", "40", "--calibration", "20"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    entry = json.loads((out / "edgecifar.json").read_text())["files"][0]
    assert entry["file"] == "baseline_tta_fp32.tflite"
    assert entry["macs"] == 2 * json.loads((trained_run / "metrics.json").read_text())["macs"]
    model = keras.models.load_model(trained_run / "model.keras")
    x = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3)).astype(np.float32)
    expected = (np.asarray(model(x)) + np.asarray(model(x[:, :, ::-1]))) / 2
    assert np.allclose(runtime.load(out / "baseline_tta_fp32.tflite").predict(x), expected, atol=1e-4)


@pytest.mark.slow
def test_tta_file_stores_the_weights_once(trained_run, tmp_path):
    sizes = {}
    for flags in ([], ["--tta"]):
        out = tmp_path / ("tta" if flags else "plain")
        result = subprocess.run([sys.executable, "-m", "edgecifar", "export", str(trained_run), "--int8", *flags,
                                 "--out", str(out), "--val-size", "40", "--calibration", "20"],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        sizes[bool(flags)] = next(out.glob("*.tflite")).stat().st_size
    assert sizes[True] < 1.02 * sizes[False]


def export_tta(trained_run, out, *flags: str) -> dict:
    """``edgecifar export RUN FLAGS`` in a subprocess; the manifest's only file entry."""
    result = subprocess.run([sys.executable, "-m", "edgecifar", "export", str(trained_run), *flags, "--out", str(out),
                             "--val-size", "40", "--calibration", "20"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    [entry] = json.loads((out / "edgecifar.json").read_text())["files"]
    return entry


@pytest.mark.slow
def test_crop_tta_export_weighs_six_views_as_airbench_and_makes_six_times_the_macs(trained_run, tmp_path):
    """airbench94's infer_mirror_translate, on probabilities: 1/4 the image and its mirror, 1/8 each of the
    image reflect-padded by 1 and cropped at [0:32] and [2:34], and their mirrors."""
    import keras

    from edgecifar import runtime

    entry = export_tta(trained_run, tmp_path / "crops", "--fp32", "--tta", "crops")
    assert (entry["file"], entry["model"]) == ("baseline_tta6_fp32.tflite", "baseline_tta6")
    assert entry["macs"] == 6 * json.loads((trained_run / "metrics.json").read_text())["macs"]
    model = keras.models.load_model(trained_run / "model.keras")
    x = np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    expected = sum(w * (np.asarray(model(v)) + np.asarray(model(v[:, :, ::-1])))
                   for w, v in [(0.25, x), (0.125, padded[:, 0:32, 0:32]), (0.125, padded[:, 2:34, 2:34])])
    assert np.allclose(runtime.load(tmp_path / "crops" / entry["file"]).predict(x), expected, atol=1e-4)


@pytest.mark.slow
def test_crop_tta_int8_file_converts_and_stores_the_weights_once(trained_run, tmp_path):
    plain = export_tta(trained_run, tmp_path / "plain", "--int8")
    crops = export_tta(trained_run, tmp_path / "crops", "--int8", "--tta", "crops")
    assert crops["file"] == "baseline_tta6_int8.tflite"
    assert crops["input"]["dtype"] == "int8" and crops["validation"]["status"] == plain["validation"]["status"]
    assert crops["bytes"] < 1.02 * plain["bytes"]


def test_an_unknown_tta_kind_is_one_error_line_and_writes_nothing(trained_run, tmp_path):
    out = tmp_path / "bogus"
    proc = subprocess.run([sys.executable, "-m", "edgecifar", "export", str(trained_run), "--tta", "bogus",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and not out.exists() and proc.stdout == ""
    assert proc.stderr == ("error: --tta bogus: unknown kind; known: flip, crops (a bare --tta means flip and goes "
                           "after MODEL)\n")


def test_each_tta_kind_feeds_the_network_as_many_views_as_its_macs_count():
    import keras

    from edgecifar.export.tta import TTA

    inp = keras.Input((32, 32, 3))
    inner = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp)), name="inner")
    x = np.zeros((3, 32, 32, 3), np.float32)
    for kind in TTA.values():
        wrapped = kind.wrap(inner)
        stack = wrapped.layers[1]  # pixels -> stack of views -> inner -> mean
        assert wrapped.layers[2] is inner and stack(x).shape[0] == kind.views * len(x)


def test_crop_tta_model_saves_and_loads_as_keras(tmp_path):
    """Its layers are registered for serialization, as the flip TTA's."""
    import keras

    from edgecifar.models.layers import with_crop_tta

    inp = keras.Input((32, 32, 3))
    model = with_crop_tta(keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp))))
    model.save(tmp_path / "crops.keras")
    x = np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    loaded = keras.saving.load_model(tmp_path / "crops.keras", compile=False)
    assert np.allclose(loaded(x), model(x), atol=1e-6)


@pytest.mark.slow
def test_gelu_models_export_to_onnx_that_matches_keras(synthetic_archive, tmp_path):
    """Exact GELU lowers to TF's Erfc, which tf2onnx cannot map by itself."""
    from edgecifar import models, runtime

    model = models.create("edge_tiny")
    run_dir = tmp_path / "gelu"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    (run_dir / "metrics.json").write_text(json.dumps({"recipe": "gelu", "val_images": 50}))
    result = subprocess.run([sys.executable, "-m", "edgecifar", "export", str(run_dir), "--onnx",
                             "--out", str(tmp_path / "out"), "--data", str(synthetic_archive), "--val-size", "40"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    x = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    got = runtime.load(tmp_path / "out" / "gelu_fp32.onnx").predict(x)
    assert np.allclose(got, np.asarray(model(x)), atol=1e-4)


@pytest.mark.slow
def test_onnx_int8_export_leaves_no_scratch_files_in_the_working_directory(trained_run, synthetic_archive, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run([sys.executable, "-m", "edgecifar", "export", str(trained_run), "--onnx-int8",
                             "--calibration", "20", "--data", str(synthetic_archive), "--out", str(tmp_path / "out")],
                            cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "out" / "baseline_int8.onnx").exists()


@pytest.mark.skipif(not __import__("edgecifar.micro").micro.installed(), reason="tflite-micro not installed")
def test_int8_export_says_the_file_runs_in_tflite_micro_and_in_what_arena(exported):
    from edgecifar import micro

    out, result = exported
    entries = {e["file"]: e for e in json.loads((out / "edgecifar.json").read_text())["files"]}
    checked = entries["baseline_int8.tflite"]["micro"]
    assert checked["runs"] is True and checked["unsupported_ops"] == []
    assert checked["arena_bytes"] == micro.check(out / "baseline_int8.tflite").arena
    assert [name for name, e in entries.items() if "micro" in e] == ["baseline_int8.tflite",
                                                                     "baseline_int16x8.tflite"]
    assert "TFLite Micro" in result.output and f"arena {checked['arena_bytes']:,} B" in result.output


@pytest.mark.skipif(not __import__("edgecifar.micro").micro.installed(), reason="tflite-micro not installed")
def test_int8_export_names_the_ops_that_stop_tflite_micro(synthetic_archive, tmp_path):
    from edgecifar import models

    run_dir = tmp_path / "gelu"
    run_dir.mkdir()
    models.create("edge_tiny").save(run_dir / "model.keras")
    (run_dir / "metrics.json").write_text(json.dumps({"recipe": "gelu", "val_images": 50}))
    result = subprocess.run([sys.executable, "-m", "edgecifar", "export", str(run_dir), "--int8", "--calibration", "50",
                             "--out", str(tmp_path / "out"), "--data", str(synthetic_archive), "--val-size", "40"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]     # the file is fine for LiteRT: written
    assert "no: lacks GELU" in result.stdout
    entry = json.loads((tmp_path / "out" / "edgecifar.json").read_text())["files"][0]
    assert entry["micro"]["runs"] is False and entry["micro"]["unsupported_ops"] == ["GELU"]
