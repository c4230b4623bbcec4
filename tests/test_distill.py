"""Distillation: targets mix the label with a cached teacher's probabilities, the teacher runs once per run
folder, and a distilled run trains on those targets and says which teacher taught it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecifar.errors import EdgeCifarError
from edgecifar.train import recipes
from edgecifar.train.distill import CACHE, cached_teacher, soft_targets, teacher_path


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
