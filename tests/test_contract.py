"""A file's contract (edgecifar/contract.py): what it takes and gives, read from the file itself, the manifest beside
it or its embedded metadata, so that no stage feeds a file outside its contract and reports a confident wrong figure."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import separable_images
from edgecifar import LABELS, contract, runtime, tflite_graph
from edgecifar.contract import Contract
from edgecifar.errors import EdgeCifarError, ModelError
from edgecifar.zoo import ZOO_DIR

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))
SHIPPED = ZOO_DIR / "edge_nano_kd160_int8.tflite"


# --------------------------------------------------------------------------- pure parts

@pytest.mark.parametrize("scale, zero_point, dtype, expected", [
    (1.0, -128, np.int8, (0.0, 255.0)),            # ours: every pixel exact
    (1 / 255, -128, np.int8, (0.0, 1.0)),          # the standard converter recipe, inputs 0..1
    (1 / 255, 0, np.uint8, (0.0, 1.0)),
    (2 / 255, 0, np.int8, (-1.0, 1.0)),            # inputs -1..1, calibrated a step short at the top
    (0.0, 0, np.float32, None),                    # a float input says nothing of its range
    (255 / 32767, 0, np.int16, None),              # 16x8: symmetric, so 0..255 looks like -255..255
    (1 / 32767, 0, np.int16, None),                # and 0..1 like -1..1: unknown, not snapped
])
def test_an_integer_inputs_quantization_says_the_range_the_graph_expects(scale, zero_point, dtype, expected):
    assert contract.quantized_range(scale, zero_point, np.dtype(dtype)) == expected


def test_an_uncommon_quantization_domain_is_taken_as_it_is():
    low, high = contract.quantized_range(0.05, 0, np.dtype(np.int8))
    assert (low, high) == pytest.approx((-6.4, 6.35))


def test_pixels_become_the_contracts_range_and_layout():
    pixels = np.array([[[[0, 255, 51]]]], np.uint8)   # one 1x1 RGB image
    assert Contract(1, 1, 3, input_range=(0.0, 1.0)).to_input(pixels)[0, 0, 0].tolist() == pytest.approx([0.0, 1.0, 0.2])
    assert Contract(1, 1, 3, input_range=(-1.0, 1.0)).to_input(pixels)[0, 0, 0].tolist() == \
        pytest.approx([-1.0, 1.0, -0.6])
    assert Contract(1, 1, 3, layout="NCHW", input_range=(0.0, 255.0)).to_input(pixels).shape == (1, 3, 1, 1)
    with pytest.raises(EdgeCifarError, match="--input-range"):
        Contract(1, 1, 3).to_input(pixels)


def test_images_are_fitted_to_the_contracts_size_and_channels():
    images, _ = separable_images(4)
    assert Contract(96, 64, 3).fit(images).shape == (4, 96, 64, 3)
    grey = Contract(16, 16, 1).fit(images)
    assert grey.shape == (4, 16, 16, 1) and grey.dtype == np.uint8
    assert Contract(32, 32, 3).fit(images) is images     # already the size: untouched


def test_a_contract_survives_its_json_and_a_malformed_one_is_one_line_naming_the_file():
    c = Contract(96, 96, 1, layout="NCHW", input_range=(-1.0, 1.0), labels=("cat", "dog"), outputs="logits",
                 source="pets")
    back = contract.from_json(c.to_json(), "f.tflite")
    assert (back.shape, back.layout, back.input_range, back.labels, back.outputs, back.source, back.origin) == \
        ((96, 96, 1), "NCHW", (-1.0, 1.0), ("cat", "dog"), "logits", "pets", "metadata")
    for bad in ("{", "[]", json.dumps({"version": 1, "input": {"height": 10 ** 6, "width": 1, "channels": 3},
                                       "output": {}}),
                json.dumps({"version": 1, "input": {"height": 8, "width": 8, "channels": 4}, "output": {}}),
                json.dumps({"version": 1, "input": {"height": 8, "width": 8, "channels": 3, "range": [0, "nan"]},
                            "output": {}})):
        with pytest.raises(ModelError) as caught:
            contract.from_json(bad, "f.tflite")
        assert str(caught.value).startswith("f.tflite: its edgecifar.contract metadata is malformed (")
        assert "\n" not in str(caught.value)


def test_outputs_are_probabilities_when_they_say_so_or_look_so_and_logits_go_through_a_softmax():
    probs = np.array([[0.25, 0.75], [1.0, 0.0]], np.float32)
    logits = np.array([[2.0, -1.0], [0.0, 3.0]], np.float32)
    assert contract.probabilities(probs, None)[1] == "probabilities"
    out, meaning = contract.probabilities(logits, None)
    assert meaning == "logits" and np.allclose(out.sum(axis=1), 1.0) and out.argmax(1).tolist() == [0, 1]
    assert contract.probabilities(probs, "logits")[1] == "logits"   # the contract's word wins


def test_classes_are_matched_by_name_else_by_index_when_the_counts_agree_and_said_once():
    index, note = contract.match_classes(("dog", "Cat"), 2, ("cat", "dog", "bird"), "m.tflite")
    assert index.tolist() == [1, 0] and "1 data classes it lacks (bird" in note
    index, note = contract.match_classes(LABELS, 10, LABELS, "m.tflite")
    assert index.tolist() == list(range(10)) and note is None
    index, note = contract.match_classes((), 3, ("a", "b", "c"), "m.tflite")
    assert index.tolist() == [0, 1, 2] and "names no classes" in note
    with pytest.raises(EdgeCifarError, match="4 outputs, no class names, and the data has 3 classes"):
        contract.match_classes((), 4, ("a", "b", "c"), "m.tflite")
    with pytest.raises(EdgeCifarError, match="none of its classes"):
        contract.match_classes(("x", "y"), 2, ("a", "b"), "m.tflite")


def test_labels_and_input_range_flags_are_parsed_or_refused_in_one_line(tmp_path):
    names = tmp_path / "labels.txt"
    names.write_text("cat\n\n dog \n")
    assert contract.read_labels(names) == ("cat", "dog")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(EdgeCifarError, match="empty.txt: no class names"):
        contract.read_labels(tmp_path / "empty.txt")
    assert contract.parse_range("-1,1") == (-1.0, 1.0)
    for bad in ("1", "0,0", "a,b", "0,inf"):
        with pytest.raises(EdgeCifarError, match="--input-range"):
            contract.parse_range(bad)


# --------------------------------------------------------------------------- files

def test_a_shipped_file_copied_anywhere_still_says_its_contract(tmp_path):
    copy = tmp_path / "renamed.tflite"
    shutil.copy(SHIPPED, copy)                       # no edgecifar.json beside it
    model = runtime.load(copy)
    assert model.contract.origin == "metadata" and model.contract.labels == LABELS
    assert model.contract.input_range == (0.0, 255.0) and model.contract.shape == (32, 32, 3)


def test_embedding_a_contract_leaves_the_graphs_outputs_bit_identical(tmp_path):
    data = SHIPPED.read_bytes()
    other = Contract(32, 32, 3, input_range=(0.0, 255.0), labels=tuple(f"c{i}" for i in range(10)))
    changed = tflite_graph.with_metadata(data, contract.METADATA_NAME, other.to_json().encode())
    (tmp_path / "a.tflite").write_bytes(data)
    (tmp_path / "b.tflite").write_bytes(changed)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    a, b = runtime.load(tmp_path / "a.tflite"), runtime.load(tmp_path / "b.tflite")
    assert np.array_equal(a.predict(pixels), b.predict(pixels)) and b.contract.labels[0] == "c0"


def test_a_file_with_malformed_embedded_metadata_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(tflite_graph.with_metadata(SHIPPED.read_bytes(), contract.METADATA_NAME, b'{"version": 1}'))
    with pytest.raises(ModelError, match=r"bad.tflite: its edgecifar.contract metadata is malformed"):
        runtime.load(bad)


@pytest.fixture(scope="module")
def converter_recipe_files(tmp_path_factory):
    """Files made as TensorFlow's converter documentation makes them, by someone else: a small trained model
    that expects pixels 0..1, converted to full int8 with a representative dataset of 0..1 images (input scale
    1/255), and a float twin that outputs logits. Returns (folder, keras accuracy on 0..1, images, labels)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    x, y = separable_images(600)
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    logits = keras.layers.Dense(10)(h)
    model = keras.Model(inp, logits)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x[:500] / 255.0, y[:500], epochs=15, batch_size=32, verbose=0)
    probs = keras.Model(inp, keras.layers.Softmax()(logits))
    folder = tmp_path_factory.mktemp("converter_recipe")
    conv = tf.lite.TFLiteConverter.from_keras_model(probs)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([img[None].astype(np.float32) / 255.0] for img in x[:100])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    (folder / "theirs_int8.tflite").write_bytes(conv.convert())
    (folder / "theirs_logits.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    keras_acc = float((probs.predict(x[500:] / 255.0, verbose=0).argmax(1) == y[500:]).mean())
    return folder, keras_acc, x[500:], y[500:]


@pytest.mark.slow
def test_an_int8_file_from_the_standard_converter_recipe_is_fed_pixels_through_its_input_scale(
        converter_recipe_files):
    folder, keras_acc, x, y = converter_recipe_files
    model = runtime.load(folder / "theirs_int8.tflite")
    assert model.contract.input_range == (0.0, 1.0) and model.contract.origin == "file"
    acc = float((model.predict(x).argmax(1) == y).mean())
    assert keras_acc > 0.5 and abs(acc - keras_acc) <= 0.05
    raw = runtime.load(folder / "theirs_int8.tflite", input_range=(0.0, 255.0))   # the old way: raw pixels
    assert float((raw.predict(x).argmax(1) == y).mean()) < keras_acc - 0.2


@pytest.mark.slow
def test_a_float_file_of_unknown_range_is_asked_for_it_and_its_logits_become_probabilities(
        converter_recipe_files):
    folder, keras_acc, x, y = converter_recipe_files
    model = runtime.load(folder / "theirs_logits.tflite")
    with pytest.raises(ModelError, match=r"theirs_logits.tflite: its input range is unknown .* --input-range"):
        model.predict(x[:2])
    model = runtime.load(folder / "theirs_logits.tflite", input_range=(0.0, 1.0))
    probs = model.predict(x)
    assert model.meaning == "logits" and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert abs(float((probs.argmax(1) == y).mean()) - keras_acc) <= 0.05


@pytest.mark.slow
def test_bench_and_predict_say_in_one_line_what_they_did_for_a_file_outside_our_contract(
        converter_recipe_files, tmp_path):
    from PIL import Image

    folder, keras_acc, x, y = converter_recipe_files
    photo = tmp_path / "photo.png"
    Image.fromarray(x[0]).resize((80, 80)).save(photo)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"kind {i}" for i in range(10)))
    proc = subprocess.run([EDGECIFAR, "predict", str(photo), "--model", str(folder / "theirs_logits.tflite"),
                           "--input-range", "0,1", "--labels", str(names), "--json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)["images"]
    assert entry["class"] == f"kind {y[0]}" and 0.0 <= entry["probability"] <= 1.0
    assert proc.stderr.count("its outputs are not probabilities (logits); shown through a softmax") == 1
    missing = subprocess.run([EDGECIFAR, "predict", str(photo), "--model", str(folder / "theirs_logits.tflite")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "--input-range" in missing.stderr


def test_an_nchw_onnx_classifier_from_elsewhere_gets_its_pixels_channel_first_in_its_range(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    weights = np.array([[1.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.5, -1.0], [-1.0, 0.5, 1.0, 0.0]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["m", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["p"], axis=1)],
        "pytorch_style", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 24, 20])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.flatten())])
    path = tmp_path / "theirs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    model = runtime.load(path, input_range=(0.0, 1.0))
    assert (model.contract.layout, model.contract.shape, model.classes) == ("NCHW", (24, 20, 3), 4)
    pixels = np.random.default_rng(1).integers(0, 256, (5, 24, 20, 3)).astype(np.uint8)
    logits = (pixels / 255.0).mean(axis=(1, 2)) @ weights
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.allclose(model.predict(pixels), expected, atol=1e-5) and model.meaning == "probabilities"


def test_a_flag_that_contradicts_the_files_own_contract_is_obeyed_and_said_once_per_flag(tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(photo)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"kind {i}" for i in range(10)))
    proc = subprocess.run([EDGECIFAR, "predict", str(photo), "--model", str(SHIPPED), "--input-range", "0,1",
                           "--labels", str(names)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("--input-range 0,1 overrides the range 0..255, which its contract (embedded) says") == 1
    assert proc.stderr.count("--labels overrides the class names airplane, automobile, bird, ...") == 1
    assert "kind " in proc.stdout                                   # the user's word wins
    agreeing = subprocess.run([EDGECIFAR, "predict", str(photo), "--model", str(SHIPPED), "--input-range", "0,255"],
                              capture_output=True, text=True, timeout=300)
    assert agreeing.returncode == 0 and "overrides" not in agreeing.stderr


def test_labels_that_do_not_match_the_files_outputs_are_refused_in_one_line_naming_the_flag(tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(photo)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    proc = subprocess.run([EDGECIFAR, "predict", str(photo), "--model", str(SHIPPED), "--labels", str(names)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert SHIPPED.name in line and "--labels gives 3 class names for 10 outputs" in line


def test_only_a_contract_the_file_itself_holds_is_said_to_be_overridden():
    read_from_shape = Contract(32, 32, 3, input_range=(0.0, 255.0), labels=("cat", "dog"), origin="file")
    assert read_from_shape.overridden((0.0, 1.0), ("x", "y")) == []
    embedded = Contract(32, 32, 3, input_range=(0.0, 255.0), labels=("cat", "dog"), origin="metadata")
    assert embedded.overridden((0.0, 255.0), ("cat", "dog")) == []
    assert len(embedded.overridden((-1.0, 1.0), ("x", "y"))) == 2
    recorded = Contract(32, 32, 3, input_range=(0.0, 255.0), labels=("cat", "dog"), origin="manifest")
    (note,) = recorded.overridden(None, ("x", "y"))
    assert note == "--labels overrides the class names cat, dog, which its contract (recorded in edgecifar.json) says"
