"""``edgecifar export`` on any Keras image classifier: a .keras, a Keras 2 .h5 or a SavedModel folder of any input
size and class count, its expected pixel range given by --input-range (the files then take raw pixels 0..255), its
class names carried in every file, calibrated and validated on a folder of real image files the tests write (class
folders: accuracy; loose images: agreement with Keras), and refused in one line when export cannot take it.

The models are built here with hand-set weights that tell five colours apart, so no test trains anything: their
accuracy on the photos is known (all right), and a file that is fed the wrong pixels shows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecifar import data, folders, runtime
from edgecifar.cli import main

#: The classes: a colour each (0..1), in the sorted order of their folder names (the class order of a folder).
COLOURS = {"amber": (0.9, 0.7, 0.1), "blue": (0.15, 0.15, 0.9), "green": (0.15, 0.9, 0.15), "red": (0.9, 0.15, 0.15),
           "violet": (0.6, 0.2, 0.8)}
NAMES = list(COLOURS)
#: Image files per class: 70 photos, 14 held out for validation, the rest calibrate.
PER_CLASS = 14


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Decoded folders are cached in the test's own folder, never in the user's ~/.cache."""
    monkeypatch.setenv(folders.CACHE_VAR, str(tmp_path / "cache"))


def photos(root: Path, per_class: int = PER_CLASS, loose: bool = False, seed: int = 0) -> Path:
    """Real PNG and JPEG files, 120x100, of each class's colour with stripes and noise: ``root/<class>/<i>.png``,
    or all in ``root`` itself (``loose``: no labels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:100, 0:120]
    for name, colour in COLOURS.items():
        folder = root if loose else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            stripes = ((xx if i % 2 else yy) // 6 % 2)[..., None] * 30.0
            pixels = np.asarray(colour) * 255 * 0.85 + stripes + rng.normal(0, 12, (100, 120, 3))
            image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
            image.save(folder / f"{name if loose else ''}{i}.{'jpg' if i % 3 == 0 else 'png'}")
    return root


def colour_model(size: tuple[int, int], rescale_inside: bool, input_name: str = "image"):
    """A Keras classifier of the five colours, weights set by hand: mean colour c (0..1) -> softmax(T (2 c.k - |k|^2))
    over the class colours k. ``rescale_inside``: it takes pixels 0..255 (a Rescaling layer first), else 0..1."""
    import keras

    inp = keras.Input((*size, 3), name=input_name)
    x = keras.layers.Rescaling(1 / 255.0, name="to_unit")(inp) if rescale_inside else inp
    x = keras.layers.Conv2D(3, 1, use_bias=False, name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(len(COLOURS), activation="softmax", name="head")(x))
    centres = np.asarray(list(COLOURS.values()), np.float32) * 0.85
    model.get_layer("conv").set_weights([np.eye(3, dtype=np.float32)[None, None]])
    model.get_layer("head").set_weights([2 * centres.T * 20.0, -(centres ** 2).sum(1) * 20.0])
    return model


def export_cli(*args: str):
    """``edgecifar export ARGS`` in this process, the table whole whatever the terminal (no COLUMNS)."""
    return CliRunner().invoke(main, ["export", *map(str, args)], env={"COLUMNS": None})


def assert_exported(result) -> None:
    assert result.exit_code == 0, result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit 2, exactly one ``error:`` line naming every fragment, no traceback."""
    text = result.output + result.stderr
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def entries(out: Path) -> dict[str, dict]:
    return {e["file"]: e for e in json.loads((out / "edgecifar.json").read_text())["files"]}


# --------------------------------------------------------------------------- any size, any classes, its data

@pytest.mark.slow
def test_a_96x96_five_class_keras_model_exports_to_int8_and_fp32_validated_against_the_folders_classes(tmp_path):
    model = colour_model((96, 96), rescale_inside=True)
    model.save(tmp_path / "colours.keras")
    folder, out = photos(tmp_path / "photos"), tmp_path / "out"
    result = export_cli(tmp_path / "colours.keras", "--int8", "--fp32", "--data", folder, "--calibration", 40,
                        "--out", out)
    assert_exported(result)
    assert "input range 0..255 assumed: its layer 'to_unit' rescales pixels inside" in result.stderr
    ds = data.load(folder, size=(96, 96))
    for name in ("colours_fp32.tflite", "colours_int8.tflite"):
        entry = entries(out)[name]
        assert entry["input"]["shape"] == [-1, 96, 96, 3] and entry["labels"] == NAMES
        assert entry["validation"]["measure"] == "accuracy" and entry["validation"]["status"] == "passed"
        assert entry["validation"]["images"] == 14 and entry["validation"]["accuracy"] == 1.0
        loaded = runtime.load(out / name)
        c = loaded.contract
        assert (c.shape, c.labels, c.input_range, c.outputs, c.origin) == (
            (96, 96, 3), tuple(NAMES), (0.0, 255.0), "probabilities", "metadata")
        assert np.mean(loaded.predict(ds.x_train).argmax(1) == ds.y_train) >= 0.95
    int8 = runtime.load(out / "colours_int8.tflite").input_quant
    assert (float(int8.scale), int(int8.zero_point), str(int8.dtype)) == (1.0, -128, "int8")


def keras2_h5(path: Path, size: int = 24) -> Path:
    """An .h5 as tf.keras 2 wrote it (config keys, ``batch_input_shape``, ``"groups": 1`` in a DepthwiseConv2D,
    inbound nodes as lists, weights under model_weights/LAYER/LAYER/NAME:0), written with h5py alone."""
    import h5py

    def layer(cls: str, name: str, inbound: str | None, **config) -> dict:
        return {"class_name": cls, "name": name, "inbound_nodes": [[[inbound, 0, 0, {}]]] if inbound else [],
                "config": {"name": name, "trainable": True, "dtype": "float32", **config}}

    init = {"class_name": "GlorotUniform", "config": {"seed": None}}
    zeros = {"class_name": "Zeros", "config": {}}
    layers = [
        {"class_name": "InputLayer", "name": "input_1", "inbound_nodes": [],
         "config": {"batch_input_shape": [None, size, size, 3], "dtype": "float32", "sparse": False,
                    "ragged": False, "name": "input_1"}},
        layer("Rescaling", "rescaling", "input_1", scale=1 / 255.0, offset=0.0),
        layer("DepthwiseConv2D", "dw", "rescaling", kernel_size=[3, 3], strides=[1, 1], padding="same",
              data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="relu", use_bias=True,
              bias_initializer=zeros, bias_regularizer=None, activity_regularizer=None, bias_constraint=None,
              depth_multiplier=1, depthwise_initializer=init, depthwise_regularizer=None, depthwise_constraint=None),
        layer("GlobalAveragePooling2D", "gap", "dw", data_format="channels_last", keepdims=False),
        layer("Dense", "dense", "gap", units=4, activation="softmax", use_bias=True, kernel_initializer=init,
              bias_initializer=zeros, kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
              kernel_constraint=None, bias_constraint=None),
    ]
    config = {"class_name": "Functional", "config": {"name": "model", "layers": layers,
                                                      "input_layers": [["input_1", 0, 0]],
                                                      "output_layers": [["dense", 0, 0]]},
              "keras_version": "2.13.1", "backend": "tensorflow"}
    rng = np.random.default_rng(1)
    weights = {"dw": {"dw/depthwise_kernel:0": rng.normal(0, 0.5, (3, 3, 3, 1)), "dw/bias:0": np.full(3, 0.1)},
               "dense": {"dense/kernel:0": rng.normal(0, 2.0, (3, 4)), "dense/bias:0": np.zeros(4)}}
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"], f.attrs["backend"] = b"2.13.1", b"tensorflow"
        f.attrs["model_config"] = json.dumps(config).encode()
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [item["name"].encode() for item in layers]
        group.attrs["keras_version"], group.attrs["backend"] = b"2.13.1", b"tensorflow"
        for item in layers:
            own = weights.get(item["name"], {})
            sub = group.create_group(item["name"])
            sub.attrs["weight_names"] = [n.encode() for n in own]
            for n, value in own.items():
                sub.create_dataset(n, data=value.astype(np.float32))
    return path


@pytest.mark.slow
def test_a_keras_2_h5_with_the_depthwise_groups_key_keras_3_dropped_exports_validated_by_agreement(
        tmp_path, synthetic_archive):
    import keras

    from edgecifar.contract import Contract
    from edgecifar.export.source import legacy_layers, single_input

    h5 = keras2_h5(tmp_path / "legacy.h5")
    with pytest.raises(Exception, match="groups"):  # the failure users meet: Keras 3 alone cannot read it
        keras.saving.load_model(h5, compile=False)
    out = tmp_path / "out"
    result = export_cli(h5, "--fp32", "--data", synthetic_archive, "--out", out)
    assert_exported(result)
    assert "agreement with Keras" in result.stdout  # 4 numbered classes, CIFAR's 10 data classes: no accuracy
    entry = entries(out)["legacy_fp32.tflite"]
    assert entry["validation"]["measure"] == "agreement with Keras" and entry["validation"]["accuracy"] is None
    assert entry["validation"]["agreement"] == 1.0 and entry["labels"] == []
    assert json.loads((out / "edgecifar.json").read_text())["validation"]["keras_accuracy"] is None
    loaded = runtime.load(out / "legacy_fp32.tflite")
    assert (loaded.contract.shape, loaded.contract.labels, loaded.contract.input_range) == ((24, 24, 3), (), (0.0, 255.0))
    ds = data.load(synthetic_archive)
    images = Contract(24, 24, 3).fit(ds.x_test[:50])  # CIFAR's 32x32 fitted to the model's input
    reference = single_input(keras.saving.load_model(h5, compile=False, custom_objects=legacy_layers()))
    assert np.max(np.abs(loaded.predict(images) - np.asarray(reference(images.astype(np.float32))))) < 1e-4


@pytest.mark.slow
def test_a_model_that_expects_0_to_1_exported_with_input_range_0_1_scores_on_raw_pixels_as_keras_does(tmp_path):
    model = colour_model((48, 48), rescale_inside=False)
    model.save(tmp_path / "unit.keras")
    folder, out = photos(tmp_path / "photos"), tmp_path / "out"
    result = export_cli(tmp_path / "unit.keras", "--int8", "--input-range", "0,1", "--data", folder,
                        "--calibration", 40, "--out", out)
    assert_exported(result)
    assert "rescale pixels 0..255 to 0..1" in result.stderr
    ds = data.load(folder, size=(48, 48))
    keras_top1 = np.asarray(model(ds.x_train.astype(np.float32) / 255.0)).argmax(1)
    int8 = runtime.load(out / "unit_int8.tflite")
    assert int8.contract.input_range == (0.0, 255.0)
    assert (float(int8.input_quant.scale), int(int8.input_quant.zero_point)) == (1.0, -128)
    file_top1 = int8.predict(ds.x_train).argmax(1)  # raw pixels 0..255, as every exported file takes
    assert np.mean(keras_top1 == ds.y_train) == 1.0
    assert np.mean(file_top1 == ds.y_train) >= 0.95 and np.mean(file_top1 == keras_top1) >= 0.95
    assert entries(out)["unit_int8.tflite"]["validation"]["status"] == "passed"


@pytest.mark.slow
def test_a_savedmodel_folder_exports_with_labels_from_a_file_calibrated_on_unlabelled_images(tmp_path):
    import onnx

    colour_model((48, 48), rescale_inside=False).export(tmp_path / "saved")
    loose = photos(tmp_path / "loose", per_class=4, loose=True)
    names = ["Amber", "Blue", "Green", "Red", "Violet"]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    out = tmp_path / "out"
    result = export_cli(tmp_path / "saved", "--int8", "--onnx", "--input-range", "0,1", "--labels",
                        tmp_path / "names.txt", "--data", loose, "--calibration", 10, "--out", out)
    assert_exported(result)
    assert "no class folders: its images calibrate" in result.stderr
    assert "agreement with Keras" in result.stdout and "accuracy" not in result.stdout
    head = json.loads((out / "edgecifar.json").read_text())
    assert head["validation"]["measure"] == "agreement with Keras" and head["source"]["macs"] is None
    for name in ("saved_int8.tflite", "saved_fp32.onnx"):
        assert runtime.load(out / name).contract.labels == tuple(names)
        assert entries(out)[name]["validation"]["agreement"] >= 0.75
    (inp,) = onnx.load(out / "saved_fp32.onnx").graph.input
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]] == [48, 48, 3]


# --------------------------------------------------------------------------- refused in one line, nothing written

def test_a_model_with_two_inputs_is_refused_in_one_line_naming_the_file(tmp_path):
    import keras

    a, b = keras.Input((32, 32, 3)), keras.Input((4,))
    pooled = keras.layers.GlobalAveragePooling2D()(a)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Concatenate()([pooled, b]))
    keras.Model([a, b], out).save(tmp_path / "two.keras")
    assert_one_line_error(export_cli(tmp_path / "two.keras", "--out", tmp_path / "out"),
                          "two.keras", "2 inputs and 1 outputs", "one image input")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_lambda_layer_is_refused_in_one_line_saying_edgecifar_never_runs_its_code(tmp_path, suffix):
    import keras

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t / 255.0)(inp)
    keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(x))).save(tmp_path / f"lambda{suffix}")
    assert_one_line_error(export_cli(tmp_path / f"lambda{suffix}", "--out", tmp_path / "out"),
                          f"lambda{suffix}", "Lambda layer (Python code)", "never runs", "safe_mode")
    assert not (tmp_path / "out").exists()


def test_a_model_without_a_fixed_image_size_is_refused_in_one_line(tmp_path):
    import keras

    inp = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))
    keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x)).save(tmp_path / "any_size.keras")
    assert_one_line_error(export_cli(tmp_path / "any_size.keras", "--out", tmp_path / "out"),
                          "any_size.keras", "[N, ?, ?, 3]", "leaves the image size open")
    assert not (tmp_path / "out").exists()


def test_a_model_made_elsewhere_with_no_rescaling_layer_is_refused_asking_for_input_range(tmp_path,
                                                                                        synthetic_archive):
    """A CIFAR-shaped model that expects 0..1 is no longer fed 0..255 and called "passed"."""
    colour_model((32, 32), rescale_inside=False).save(tmp_path / "unit.keras")
    result = export_cli(tmp_path / "unit.keras", "--data", synthetic_archive, "--out", tmp_path / "out")
    assert_one_line_error(result, "unit.keras", "no Rescaling or Normalization layer", "--input-range LOW,HIGH")
    assert not (tmp_path / "out").exists()


def test_labels_that_do_not_count_the_models_outputs_are_refused_in_one_line(tmp_path, synthetic_archive):
    colour_model((32, 32), rescale_inside=True).save(tmp_path / "colours.keras")
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    result = export_cli(tmp_path / "colours.keras", "--labels", tmp_path / "names.txt", "--data", synthetic_archive,
                        "--out", tmp_path / "out")
    assert_one_line_error(result, "--labels", "2 class names for the model's 5 outputs")
    assert not (tmp_path / "out").exists()


def test_a_savedmodel_whose_graph_writes_files_is_refused_before_tensorflow_runs_it(tmp_path):
    import tensorflow as tf

    planted = tmp_path / "planted.txt"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(planted), tf.strings.as_string(tf.reduce_sum(x)))
            return tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]))

    writer = Writer()
    tf.saved_model.save(writer, str(tmp_path / "writer"), signatures={"serving_default": writer.serve})
    assert_one_line_error(export_cli(tmp_path / "writer", "--input-range", "0,1", "--out", tmp_path / "out"),
                          "writer", "operators that reach outside it", "WriteFile")
    assert not planted.exists() and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- class names

def test_class_names_come_from_the_flag_the_run_the_data_folder_or_cifar_in_that_order(tmp_path, synthetic_archive):
    from edgecifar import LABELS
    from edgecifar.export.dataset import choose_labels

    folder = data.load(photos(tmp_path / "photos", per_class=1), size=(8, 8))
    cifar = data.load(synthetic_archive)
    assert choose_labels(("a", "b", "c", "d", "e"), tuple(NAMES), 5, folder) == (("a", "b", "c", "d", "e"), "--labels")
    assert choose_labels(None, tuple("vwxyz"), 5, folder) == (tuple("vwxyz"), "the run's metrics.json")
    assert choose_labels(None, None, 5, folder) == (tuple(NAMES), "the data's class folders")
    assert choose_labels(None, None, 4, folder) == ((), "numbered")
    assert choose_labels(None, None, 10, cifar) == (LABELS, "CIFAR-10")
    assert choose_labels(None, None, 5, cifar) == ((), "numbered")


def test_a_folder_whose_classes_are_the_models_in_another_order_is_scored_by_name(tmp_path):
    from edgecifar.export.dataset import targets

    folder = data.load(photos(tmp_path / "photos", per_class=1), size=(8, 8))
    shuffled = ("Violet", "red", "GREEN", "blue", "amber")
    matched = targets(shuffled, folder, "m.keras")
    assert matched.note is None
    assert [shuffled[i].lower() for i in matched.labels(folder.y_train)] == [NAMES[y] for y in folder.y_train]
    other = targets(("cat", "dog", "fox", "owl", "yak"), folder, "m.keras")
    assert other.to_model is None and "agreement with the Keras model" in other.note


def test_the_default_calibration_count_shrinks_to_a_small_folder_and_says_so_while_an_asked_one_does_not():
    from edgecifar.export import calibration

    assert calibration._count(None, 20_000, "data") == (500, None)
    n, note = calibration._count(None, 217, "photos")
    assert n == 217 and note == "calibration: 217 images, all photos has outside validation (the default is 500)"
    assert calibration._count(300, 217, "photos") == (300, None)   # asked for: the shortfall is an error later


@pytest.mark.slow
def test_the_doctor_explains_a_foreign_48x48_five_class_model_that_takes_0_to_1_in_both_int8_formats(tmp_path):
    colour_model((48, 48), rescale_inside=False).save(tmp_path / "unit.keras")
    folder, out, report = photos(tmp_path / "photos"), tmp_path / "out", tmp_path / "doctor.json"
    result = export_cli(tmp_path / "unit.keras", "--int8", "--onnx-int8", "--input-range", "0,1", "--data", folder,
                        "--calibration", 40, "--explain", "--max-drop", "5", "--json", report, "--out", out)
    assert_exported(result)
    found = json.loads(report.read_text())
    assert found["measure"] == "accuracy" and found["images"] == 14                 # the folder's validation images
    for explained in found["explanations"]:
        names = " ".join(layer["name"] for layer in explained["layers"])
        assert "conv" in names and [layer["rank"] for layer in explained["layers"]] == list(
            range(1, len(explained["layers"]) + 1)), explained["format"]
    assert {e["format"] for e in found["explanations"]} == {"TFLite int8", "ONNX int8"}
    assert found["max_drop"]["met"] and found["failures"] == []
    entry = entries(out)["unit_int8.tflite"]
    assert entry["labels"] == NAMES and entry["input"]["shape"] == [-1, 48, 48, 3]
    assert runtime.load(out / "unit_int8.tflite").contract.input_range == (0.0, 255.0)   # takes raw pixels
