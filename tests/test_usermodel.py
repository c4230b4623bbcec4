"""`edgecifar train RECIPE --model net.py:build`: your own architecture, trained with a recipe's settings; every
way a builder can be wrong is one line naming the file before any training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecifar.errors import EdgeCifarError, ModelError
from edgecifar.train import usermodel

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))
NET = '''
import keras

def build(input_shape, classes):
    inp = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(classes)(x))   # logits: edgecifar appends the softmax

def wrong(input_shape, classes):
    inp = keras.Input((28, 28, 1))
    return keras.Model(inp, keras.layers.Dense(classes)(keras.layers.Flatten()(inp)))

def not_a_model(input_shape, classes):
    return 42
'''


def test_a_builder_is_named_as_file_and_function_and_refused_in_one_line_when_it_is_not_there(tmp_path):
    net = tmp_path / "net.py"
    net.write_text(NET)
    assert usermodel.parse(f"{net}:wrong").function == "wrong" and usermodel.parse(str(net)).function == "build"
    with pytest.raises(EdgeCifarError, match="expected a Python file"):
        usermodel.parse(str(tmp_path / "net.h5"))
    with pytest.raises(EdgeCifarError, match="is not a file"):
        usermodel.parse(f"{tmp_path / 'gone.py'}:build")
    with pytest.raises(ModelError, match=r"net.py: no function missing\(input_shape, classes\) in it"):
        usermodel.load_builder(usermodel.parse(f"{net}:missing"))
    (tmp_path / "broken.py").write_text("def build(:\n")
    with pytest.raises(ModelError, match=r"broken.py: cannot import it \(SyntaxError"):
        usermodel.load_builder(usermodel.parse(str(tmp_path / "broken.py")))


def test_a_builder_whose_model_does_not_fit_the_data_is_one_line_saying_what_it_needs(tmp_path):
    net = tmp_path / "net.py"
    net.write_text(NET)
    with pytest.raises(ModelError, match=r"maps \[28, 28, 1\] to \[5\]; this data needs \[32, 32, 3\] pixels to 5"):
        usermodel.build(usermodel.parse(f"{net}:wrong"), (32, 32, 3), 5, print)
    with pytest.raises(ModelError, match="returned int, not a keras.Model"):
        usermodel.build(usermodel.parse(f"{net}:not_a_model"), (32, 32, 3), 5, print)
    said = []
    model = usermodel.build(usermodel.parse(str(net)), (24, 24, 3), 5, said.append)
    assert tuple(model.output_shape) == (None, 5) and len(said) == 1 and "softmax is appended" in said[0]


def test_a_recipe_that_reaches_into_our_own_architecture_is_refused_with_a_user_model(tmp_path):
    net = tmp_path / "net.py"
    net.write_text(NET)
    proc = subprocess.run([EDGECIFAR, "train", "mnv2_ft96", "--model", str(net), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "sets freeze" in proc.stderr


@pytest.mark.slow
def test_your_architecture_trains_with_a_recipes_settings_and_is_recorded(synthetic_archive, tmp_path):
    net = tmp_path / "net.py"
    net.write_text(NET)
    out = tmp_path / "run"
    proc = subprocess.run([EDGECIFAR, "train", "bn_gap_sound", "--model", f"{net}:build", "--data",
                           str(synthetic_archive), "--epochs", "2", "--batch-size", "32", "--val-size", "50",
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == f"{net}:build" and metrics["user_model"]["function"] == "build"
    assert metrics["recipe"] == "bn_gap_sound" and metrics["epochs"] == 2
    assert "softmax is appended" in proc.stdout + proc.stderr
