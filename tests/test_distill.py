"""Distillation: targets mix the label with a cached teacher's probabilities, the teacher runs once per run
folder, and a distilled run trains on those targets and says which teacher taught it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecifar.errors import EdgeCifarError
from edgecifar.train import recipes
from edgecifar.train.distill import (CACHE, VIEW_PAD, TeacherViews, cached_teacher, render_views, soft_targets,
                                     teacher_path, view_placement)


def test_soft_targets_weigh_the_teacher_by_alpha_and_the_label_by_the_rest():
    teacher = np.array([[0.6, 0.4] + [0.0] * 8, [0.0, 0.0, 0.5, 0.5] + [0.0] * 6], np.float32)
    out = soft_targets(np.array([0, 3]), teacher, alpha=0.25)
    np.testing.assert_allclose(out[0, :2], [0.25 * 0.6 + 0.75, 0.25 * 0.4])
    np.testing.assert_allclose(out[1, 2:4], [0.25 * 0.5, 0.25 * 0.5 + 0.75])
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)


def test_soft_targets_renormalise_a_teacher_whose_int8_probabilities_do_not_sum_to_one():
    teacher = np.full((1, 10), 0.098, np.float32)  # int8 softmax outputs sum to 0.98 here
    np.testing.assert_allclose(soft_targets(np.array([4]), teacher, alpha=1.0), np.full((1, 10), 0.1), rtol=1e-6)


def test_alpha_zero_is_the_one_hot_label_and_alpha_outside_0_1_is_refused():
    teacher = np.full((2, 10), 0.1, np.float32)
    np.testing.assert_array_equal(soft_targets(np.array([1, 9]), teacher, 0.0), np.eye(10, dtype=np.float32)[[1, 9]])
    with pytest.raises(ValueError, match="distillation weight"):
        soft_targets(np.array([1, 9]), teacher, 1.5)


def test_an_unknown_teacher_is_refused_in_one_line():
    with pytest.raises(EdgeCifarError, match="no_such_teacher.tflite: distillation teacher not found"):
        teacher_path("no_such_teacher.tflite")


def test_a_zoo_file_name_names_the_shipped_teacher():
    from edgecifar.zoo import ZOO_DIR

    shipped = next(ZOO_DIR.glob("*.tflite"))
    assert teacher_path(shipped.name) == shipped


@pytest.mark.slow
def test_the_teacher_runs_once_and_is_reused_from_the_run_folder(bench_models, tmp_path):
    from edgecifar import runtime

    from conftest import separable_images

    images, _ = separable_images(40, seed=3)
    teacher = bench_models / "tiny_int8.tflite"
    probs, info = cached_teacher(tmp_path, str(teacher), images, "fp-1")
    model = runtime.load(teacher)
    np.testing.assert_allclose(probs, (model.predict(images) + model.predict(images[:, :, ::-1])) / 2, atol=1e-6)
    assert info["teacher"] == "tiny_int8.tflite" and len(info["teacher_sha256"]) == 64
    stamp = (tmp_path / CACHE).stat().st_mtime_ns
    again, _ = cached_teacher(tmp_path, str(teacher), images, "fp-1")
    np.testing.assert_array_equal(again, probs)
    assert (tmp_path / CACHE).stat().st_mtime_ns == stamp
    cached_teacher(tmp_path, str(teacher), images, "other data")  # another data set: computed afresh
    assert (tmp_path / CACHE).stat().st_mtime_ns != stamp


def test_the_epoch_pipeline_passes_soft_targets_through_unchanged():
    from edgecifar.train.pipeline import epoch_dataset

    from conftest import separable_images

    images, labels = separable_images(8, seed=1)
    targets = soft_targets(labels, np.full((8, 10), 0.1, np.float32), 0.5)
    batches = list(epoch_dataset(images, targets, 8, seed=0, epoch=0, augment="none"))
    perm = np.random.default_rng([0, 0]).permutation(8)
    np.testing.assert_allclose(batches[0][1].numpy(), targets[perm])


@pytest.mark.slow
def test_a_distilled_run_records_its_teacher_and_its_accuracy_on_the_training_images(synthetic_archive, bench_models,
                                                                                      tmp_path):
    from edgecifar.train.runner import RunConfig, run

    recipe = recipes.get("baseline").with_overrides(epochs=1, batch_size=32,
                                                    distill=str(bench_models / "tiny_int8.tflite"), distill_alpha=0.5)
    metrics = run(RunConfig(recipe, out=tmp_path / "kd", data=str(synthetic_archive), val_size=50, progress=False))
    kd = json.loads((tmp_path / "kd" / "metrics.json").read_text())["distillation"]
    assert kd["teacher"] == "tiny_int8.tflite" and 0.5 < kd["teacher_train_accuracy"] <= 1.0
    assert metrics["recipe_settings"]["distill_alpha"] == 0.5 and (tmp_path / "kd" / CACHE).exists()


def test_views_are_a_pure_function_of_the_seed_and_the_view_and_view_0_is_the_clean_image():
    flips, shifts = view_placement(500, seed=7, view=3)
    again = view_placement(500, seed=7, view=3)
    np.testing.assert_array_equal(flips, again[0])
    np.testing.assert_array_equal(shifts, again[1])
    assert 150 < flips.sum() < 350 and shifts.min() == -VIEW_PAD and shifts.max() == VIEW_PAD
    for other in (view_placement(500, seed=8, view=3), view_placement(500, seed=7, view=4)):
        assert not np.array_equal(shifts, other[1])
    clean = view_placement(500, seed=7, view=0)
    assert not clean[0].any() and not clean[1].any()


def test_a_view_is_the_image_mirrored_then_moved_by_whole_pixels_with_reflect_fill():
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    flips, shifts = view_placement(6, seed=1, view=1)
    shown = render_views(images, flips, shifts)
    for img, flip, (dx, dy), out in zip(images, flips, shifts, shown):
        padded = np.pad(img[:, ::-1] if flip else img, ((2, 2), (2, 2), (0, 0)), mode="symmetric")
        np.testing.assert_array_equal(out, padded[2 + dy:34 + dy, 2 + dx:34 + dx])


def test_every_image_shows_each_of_its_views_once_in_k_epochs():
    labels = np.arange(30) % 10
    probs = np.random.default_rng(0).dirichlet(np.ones(10), size=(4, 30)).astype(np.float32)
    views = TeacherViews.build(labels, probs, alpha=1.0, seed=5)
    shown = np.stack([views.epoch(e)[0] for e in range(4)])        # [epochs, N, classes]
    for i in range(30):
        np.testing.assert_allclose(np.sort(shown[:, i, 0]), np.sort(views.targets[:, i, 0]))
    assert len({tuple(views.epoch(e)[1]) for e in range(4)}) > 1  # the flips shown change from epoch to epoch


def test_mixup_mixes_images_and_targets_with_one_weight_and_keeps_targets_distributions():
    import tensorflow as tf

    from edgecifar.train.pipeline import mixup

    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)), tf.float32)
    targets = tf.constant(np.eye(10, dtype=np.float32)[[1, 2, 3, 4]])
    mixed, mixed_targets = (t.numpy() for t in mixup(images, targets, tf.constant([3, 0], tf.int64), a=0.4))
    lam = mixed_targets[0, 1]
    assert 0.0 < lam < 1.0 and mixed_targets[0, 4] == pytest.approx(1 - lam)
    np.testing.assert_allclose(mixed, lam * images.numpy() + (1 - lam) * images.numpy()[::-1], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.slow
def test_each_view_is_labelled_in_one_teacher_pass_and_the_cache_is_keyed_on_views_teacher_and_seed(bench_models,
                                                                                                    tmp_path):
    from edgecifar import runtime

    from conftest import separable_images

    images, _ = separable_images(40, seed=3)
    teacher = bench_models / "tiny_int8.tflite"
    probs, info = cached_teacher(tmp_path, str(teacher), images, "fp-1", views=3, seed=4)
    model = runtime.load(teacher)
    assert probs.shape == (3, 40, 10) and info["views"] == 3 and info["teacher_seconds"] >= 0
    for v in range(3):  # the view itself, no mirror average
        np.testing.assert_allclose(probs[v], model.predict(render_views(images, *view_placement(40, 4, v))), atol=1e-6)
    stamp = (tmp_path / CACHE).stat().st_mtime_ns
    again, info = cached_teacher(tmp_path, str(teacher), images, "fp-1", views=3, seed=4)   # a resume
    np.testing.assert_array_equal(again, probs)
    assert (tmp_path / CACHE).stat().st_mtime_ns == stamp and "teacher_seconds" not in info
    for change in ({"views": 2}, {"seed": 5}, {"teacher": bench_models / "tiny_fp32.tflite"}):
        args = {"views": 3, "seed": 4, "teacher": teacher, **change}
        fresh, info = cached_teacher(tmp_path, str(args.pop("teacher")), images, "fp-1", **args)
        assert "teacher_seconds" in info, change
    assert fresh.shape == (3, 40, 10) and not np.array_equal(fresh, probs)


@pytest.mark.slow
def test_a_batch_of_teacher_views_carries_the_teacher_targets_of_exactly_the_images_it_shows(bench_models, tmp_path):
    from edgecifar import runtime
    from edgecifar.train.pipeline import epoch_dataset

    from conftest import separable_images

    images, labels = separable_images(48, seed=2)
    teacher = bench_models / "tiny_int8.tflite"
    probs, _ = cached_teacher(tmp_path, str(teacher), images, "fp", views=3, seed=1)
    views = TeacherViews.build(labels, probs, alpha=1.0, seed=1)
    assert not np.allclose(views.targets[1], views.targets[2])  # the views' targets differ: a wrong view would show
    model = runtime.load(teacher)
    for epoch in (0, 1):
        for shown, targets in epoch_dataset(images, views, 16, seed=1, epoch=epoch, augment="flip_translate"):
            pixels = shown.numpy()
            assert np.array_equal(pixels, np.round(pixels))           # whole-pixel views, not resampled
            expected = model.predict(pixels.astype(np.uint8))
            np.testing.assert_allclose(targets.numpy(), expected / expected.sum(axis=1, keepdims=True), atol=1e-5)


@pytest.mark.slow
def test_a_run_with_teacher_views_records_them_and_refuses_another_augmentation(synthetic_archive, bench_models,
                                                                                 tmp_path):
    from edgecifar.train.runner import RunConfig, run

    recipe = recipes.get("baseline").with_overrides(epochs=1, batch_size=32, augment="flip_translate",
                                                    distill=str(bench_models / "tiny_int8.tflite"), distill_alpha=0.5,
                                                    distill_views=2)
    run(RunConfig(recipe, out=tmp_path / "kd", data=str(synthetic_archive), val_size=50, progress=False))
    kd = json.loads((tmp_path / "kd" / "metrics.json").read_text())["distillation"]
    assert kd["views"] == 2 and 0.5 < kd["teacher_train_accuracy"] <= 1.0
    with pytest.raises(EdgeCifarError, match="distill_views shows the teacher's flip_translate views"):
        run(RunConfig(recipe.with_overrides(augment="none"), out=tmp_path / "other", data=str(synthetic_archive),
                      val_size=50, progress=False))
