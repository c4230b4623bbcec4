"""Whitening stem (train/whiten.py): the stem's filters decorrelate image patches, in Keras' kernel
layout, and a recipe that asks for it trains with the stem set from its training images and frozen."""

from __future__ import annotations

import numpy as np
import pytest

from edgecifar import data as cifar
from edgecifar.errors import EdgeCifarError
from edgecifar.train import recipes
from edgecifar.train.runner import RunConfig, run
from edgecifar.train.whiten import patches, whitening_kernel


def _correlated_images(n: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth random images with correlated channels: their patches are far from white."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 33, 33, 1))
    smooth = (base[:, 1:, 1:] + base[:, :-1, 1:] + base[:, 1:, :-1] + base[:, :-1, :-1]) / 4
    return smooth * np.array([1.0, 0.8, 0.5]) + rng.normal(scale=0.1, size=(n, 32, 32, 3))


def test_the_whitened_patches_have_identity_covariance():
    x = _correlated_images()
    w = whitening_kernel(x, k=2, filters=24, eps=1e-9)
    out = patches(x, 2) @ w.reshape(12, 24)[:, :12]
    np.testing.assert_allclose(out.T @ out / len(out), np.eye(12), atol=1e-3)


def test_the_second_half_of_the_filters_is_the_first_half_negated():
    w = whitening_kernel(_correlated_images(), k=2, filters=16)
    np.testing.assert_array_equal(w[..., 8:], -w[..., :8])


def test_fewer_filters_keep_the_directions_of_largest_variance():
    x = _correlated_images()
    p = patches(x, 2)
    eigenvalues, eigenvectors = np.linalg.eigh(p.T @ p / len(p))
    top4 = eigenvectors[:, np.argsort(eigenvalues)[::-1][:4]]
    w = whitening_kernel(x, 2, 8).reshape(12, 8)[:, :4]
    directions = w / np.linalg.norm(w, axis=0)
    np.testing.assert_allclose(np.abs(np.sum(directions * top4, axis=0)), 1.0, atol=1e-5)


def test_patch_rows_follow_the_keras_kernel_layout():
    import keras

    x = _correlated_images(4).astype(np.float32)
    w = whitening_kernel(x, k=2, filters=10)
    conv = keras.layers.Conv2D(10, 2, padding="valid", use_bias=False)
    conv.build(x.shape)
    conv.kernel.assign(w)
    keras_out = np.asarray(conv(x)).reshape(-1, 10)
    np.testing.assert_allclose(patches(x, 2) @ w.reshape(12, 10), keras_out, rtol=1e-4, atol=1e-3)


def test_an_odd_or_too_large_filter_count_is_refused():
    x = _correlated_images(4)
    for filters in (7, 26, 0):
        with pytest.raises(EdgeCifarError, match="even number of filters"):
            whitening_kernel(x, 2, filters)


@pytest.mark.slow
def test_a_whitened_stem_is_set_from_the_training_images_and_stays_frozen(synthetic_archive, tmp_path):
    import keras

    from edgecifar.models.layers import CIFAR_MEAN, CIFAR_STD

    recipe = recipes.get("edge_fast").with_overrides(epochs=1, batch_size=32, whiten_stem=True)
    run(RunConfig(recipe, out=tmp_path / "w", data=str(synthetic_archive), val_size=50, progress=False))
    ds = cifar.load(str(synthetic_archive))
    tr_idx, _ = cifar.stratified_split(ds.y_train, 50, seed=0)
    x = (ds.x_train[tr_idx].astype(np.float32) - CIFAR_MEAN) / CIFAR_STD
    model = keras.models.load_model(tmp_path / "w" / "model.keras")
    stem = model.get_layer("stem")
    assert not stem.trainable
    np.testing.assert_allclose(np.asarray(stem.kernel), whitening_kernel(x, 2, stem.kernel.shape[-1]), rtol=1e-5,
                               atol=1e-5)


def test_a_recipe_whose_model_has_no_stem_is_refused_in_one_line():
    from edgecifar.train.assemble import build_model

    with pytest.raises(EdgeCifarError, match="no layer named 'stem'"):
        build_model(recipes.get("baseline").with_overrides(whiten_stem=True))
