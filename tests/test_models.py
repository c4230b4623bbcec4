"""The model registry: every architecture honours the input/output contract and is created by name."""

from __future__ import annotations

import numpy as np
import pytest

from edgecifar import models
from edgecifar.errors import ModelError
from edgecifar.models.stats import count_macs

REQUIRED = ["baseline", "deeper", "bn_gap", "l2", "mnv2_dense128", "mnv2_dropout", "resnet8"]


def _build(name):
    kwargs = {"weights": "none"} if models.get(name).family == "mobilenetv2" else {}
    return models.create(name, **kwargs)


def test_registry_holds_the_seed_ladder_mobilenet_heads_and_resnet8():
    assert set(REQUIRED) <= set(models.names())


@pytest.mark.parametrize("name", models.names())
def test_every_model_takes_raw_pixels_and_returns_ten_probabilities(name):
    model = _build(name)
    assert tuple(model.input_shape) == (None, 32, 32, 3)
    assert tuple(model.output_shape) == (None, 10)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    probs = np.asarray(model(pixels, training=False))
    assert probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and (probs >= 0).all()


def test_resnet8_has_the_mlperf_tiny_parameter_count_and_macs():
    model = models.create("resnet8")
    assert model.count_params() == 78_666
    assert count_macs(model) == 12_501_632


def test_edge_nano_runs_one_convolution_at_full_resolution_every_width_a_multiple_of_16():
    import keras
    model = models.create("edge_nano")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 32, 32, 64, 64]
    assert [c.output.shape[1] for c in convs] == [32, 16, 16, 8, 8]
    acts = {layer.get_config()["activation"] for layer in model.layers if isinstance(layer, keras.layers.Activation)}
    assert acts == {"relu", "softmax"}   # TFLite Micro has no GELU
    assert model.count_params() < 84_000   # under 100 KB as int8 with the contract's metadata


def test_residual_edge_nano_adds_each_stage_second_conv_to_its_input_at_no_parameter_cost():
    import keras
    plain, residual = models.create("edge_nano"), models.create("edge_nano", residual=True)
    adds = [layer for layer in residual.layers if isinstance(layer, keras.layers.Add)]
    assert [a.output.shape[1:] for a in adds] == [(16, 16, 32), (8, 8, 64)]
    assert residual.count_params() == plain.count_params()
    assert count_macs(residual) == count_macs(plain)


def test_macs_of_the_baseline_match_a_hand_count():
    conv1 = 30 * 30 * 3 * 3 * 3 * 32
    conv2 = 13 * 13 * 3 * 3 * 32 * 64
    dense = 6 * 6 * 64 * 128 + 128 * 10
    assert count_macs(models.create("baseline")) == conv1 + conv2 + dense


def test_an_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ModelError, match="unknown model 'nope'; known: .*resnet8"):
        models.create("nope")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        models.register("baseline")(lambda: None)


def test_mobilenet_backbone_is_a_named_sub_model_at_96_with_imagenet_statistics(real_weights):
    model = models.create("mnv2_dropout", weights=str(real_weights))
    backbone = model.get_layer("backbone")  # what of it trains is the recipe's decision (tests/test_finetune.py)
    assert tuple(backbone.input_shape) == (None, 96, 96, 3)
    bn = backbone.get_layer("bn_Conv1")
    assert not np.allclose(bn.moving_variance.numpy(), 1.0)  # ImageNet statistics, not the initialiser's


def test_mobilenet_weights_that_do_not_exist_are_named(tmp_path):
    with pytest.raises(ModelError, match="no MobileNetV2 weights file"):
        models.create("mnv2_dropout", weights=str(tmp_path / "missing.h5"))


def test_a_failed_imagenet_download_is_one_error_line_naming_the_weights_variable(tmp_path, monkeypatch):
    # No local copy anywhere, and every download goes to a closed port: Keras' get_file raises a bare Exception.
    monkeypatch.delenv("EDGECIFAR_WEIGHTS", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(ModelError, match=r"cannot download .* for 160x160 .*EDGECIFAR_WEIGHTS") as err:
        models.create("mnv2_dropout", size=160)
    assert "\n" not in str(err.value)
