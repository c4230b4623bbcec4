"""Airbench's pieces on edgecifar's plain convnets (issue 11): BatchNorm with a learned shift only, at
airbench's running-statistics momentum, chosen by a recipe; the alternating flip; the ablation recipes."""

from __future__ import annotations

import dataclasses
import json
from typing import get_args

import numpy as np
import pytest

from edgecifar import models
import research.recipes  # noqa: F401  (the experiment recipes these tests read)
from edgecifar.train import recipes
from edgecifar.train.augment import AUGMENTATIONS, alternating_flips, mirror
from edgecifar.train.assemble import build_model
from edgecifar.train.pipeline import epoch_dataset
from edgecifar.train.runner import RunConfig, run

EDGE_FAST_BN_CHANNELS = 2 * (32 + 128 + 128)   # two BatchNorm layers per stage


def _batchnorms(model):
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_the_default_edge_models_keep_their_batchnorm_scale_and_published_parameter_counts():
    # The shipped zoo files were trained with these builders: 496,842 and 1,975,082 parameters (edgecifar.json).
    for name, params in (("edge_fast", 496_842), ("edge_best", 1_975_082)):
        model = models.create(name)
        assert model.count_params() == params
        assert all(bn.scale and bn.gamma is not None for bn in _batchnorms(model))


def test_bias_only_batchnorm_has_no_gamma_weights_and_one_parameter_fewer_per_channel():
    model = models.create("edge_fast", bn_scale=False)
    assert all(not bn.scale and bn.gamma is None and bn.beta is not None for bn in _batchnorms(model))
    assert not [w for w in model.weights if "gamma" in w.path]
    assert model.count_params() == 496_842 - EDGE_FAST_BN_CHANNELS


def test_edge_fast_air_builds_bias_only_batchnorm_at_airbench_momentum():
    bns = _batchnorms(build_model(recipes.get("edge_fast_air")))
    assert len(bns) == 6 and all(not bn.scale and bn.momentum == 0.6 for bn in bns)


def test_the_ablation_recipes_add_one_airbench_step_each_to_edge_fast():
    fast, wema, air = (recipes.get(n) for n in ("edge_fast", "edge_fast_wema", "edge_fast_air"))
    for r in (wema, air):
        assert (r.model, r.epochs, r.batch_size, r.lr) == (fast.model, fast.epochs, fast.batch_size, fast.lr)
    assert (wema.whiten_stem, wema.ema, wema.augment, wema.model_kwargs) == (True, 0.99, fast.augment, {})
    assert (air.whiten_stem, air.ema, air.augment) == (True, 0.99, "altflip_translate")
    assert (air.model_kwargs, air.bn_momentum) == ({"bn_scale": False}, 0.6)


def test_every_augment_a_recipe_can_name_has_an_augmentation():
    assert set(get_args(recipes.Augment)) == set(AUGMENTATIONS)


def test_an_unknown_augment_is_refused_at_import():
    bad = dataclasses.replace(recipes.get("edge_fast"), augment="flipflop")
    with pytest.raises(ValueError, match="unknown augment 'flipflop'"):
        recipes.check_recipes({bad.name: bad})


def test_the_alternating_flip_mirrors_each_image_in_exactly_one_of_any_two_consecutive_epochs():
    flips = [alternating_flips(1000, seed=7, epoch=e) for e in range(6)]
    for a, b in zip(flips, flips[1:]):
        assert np.all(a ^ b)
    assert 0.4 < flips[0].mean() < 0.6


def test_the_alternating_flips_are_fixed_by_the_seed_alone():
    np.testing.assert_array_equal(alternating_flips(500, 3, 0), alternating_flips(500, 3, 0))
    np.testing.assert_array_equal(alternating_flips(500, 3, 1), alternating_flips(500, 3, 5))
    assert not np.array_equal(alternating_flips(500, 3, 0), alternating_flips(500, 4, 0))


def test_the_alternating_flip_mirrors_exactly_the_chosen_images_left_to_right():
    x = np.random.default_rng(0).integers(0, 256, (40, 4, 5, 3), dtype=np.uint8)
    flips = alternating_flips(len(x), 2, 1)
    out = np.asarray(mirror(x, flips))
    np.testing.assert_array_equal(out[flips], x[flips][:, :, ::-1])
    np.testing.assert_array_equal(out[~flips], x[~flips])


def test_altflip_epochs_are_a_pure_function_of_seed_and_epoch_so_a_resume_sees_the_same_images():
    x = np.random.default_rng(1).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    y = np.arange(24) % 10
    images = lambda epoch: np.concatenate([b[0] for b in epoch_dataset(x, y, 8, 5, epoch, "altflip_translate")])
    np.testing.assert_array_equal(images(1), images(1))
    assert not np.array_equal(images(0), images(1))


@pytest.mark.slow
def test_edge_fast_air_trains_one_epoch_and_records_its_settings_in_metrics_json(synthetic_archive, tmp_path):
    recipe = recipes.get("edge_fast_air").with_overrides(epochs=1, batch_size=64)
    run(RunConfig(recipe, out=tmp_path / "air", data=str(synthetic_archive), val_size=50, progress=False))
    metrics = json.loads((tmp_path / "air" / "metrics.json").read_text())
    settings = metrics["recipe_settings"]
    assert (settings["augment"], settings["model_kwargs"], settings["bn_momentum"]) == \
        ("altflip_translate", {"bn_scale": False}, 0.6)
    assert metrics["parameters"] == 496_842 - EDGE_FAST_BN_CHANNELS and metrics["epochs"] == 1
