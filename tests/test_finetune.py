"""Fine-tuning a pretrained backbone (train/finetune.py): the recipe decides what is frozen and when it thaws,
the backbone learns at its own rate, and BatchNorm momentum is a recipe setting."""

from __future__ import annotations

import csv
import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from edgecifar.train import recipes
from edgecifar.train.finetune import GroupAdam, batchnorm_layers, stale_share


def test_a_backbone_variable_moves_backbone_lr_times_as_far_as_a_head_variable_in_one_adam_step():
    import keras

    head, backbone = keras.Variable(np.zeros(3, np.float32), name="head"), keras.Variable(np.zeros(3, np.float32),
                                                                                         name="bb")
    opt = GroupAdam(0.01, group=[backbone.path], scale=0.5)
    grad = np.array([1.0, -2.0, 0.5], np.float32)
    opt.apply_gradients([(grad, head), (grad, backbone)])
    # Adam's first step is lr * g / |g| (up to epsilon) for every coordinate
    np.testing.assert_allclose(head.numpy(), -0.01 * np.sign(grad), rtol=1e-4)
    np.testing.assert_allclose(backbone.numpy(), -0.005 * np.sign(grad), rtol=1e-4)


def test_group_adam_keeps_its_group_and_scale_through_serialisation():
    import keras

    opt = GroupAdam(1e-3, group=["Conv1/kernel", "bn_Conv1/gamma"], scale=0.25)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(clone, GroupAdam) and clone.group == ["Conv1/kernel", "bn_Conv1/gamma"] and clone.scale == 0.25


def test_batchnorm_statistics_keep_55_percent_stale_weight_after_600_steps_at_0999_and_none_at_099():
    assert stale_share(0.999, 600) == pytest.approx(0.5486, abs=1e-4)
    assert stale_share(0.99, 600) == pytest.approx(0.0024, abs=1e-4)


def test_cosine_warms_up_linearly_then_falls_half_a_cosine_to_zero():
    from edgecifar.train.schedule import Cosine

    sched = Cosine(1e-3, total_steps=100, warmup=0.1)
    lrs = [float(sched(s)) for s in range(101)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4) and lrs[10] == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(5e-4, rel=1e-5) and lrs[100] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_every_recipe_row_records_its_schedule_explicitly():
    assert recipes.get("resnet8").schedule == "one_cycle" and recipes.get("baseline").schedule == "constant"
    assert recipes.get("mnv2_ft96").schedule == "cosine"


@pytest.mark.parametrize("change, message", [
    (dict(unfreeze_at=1, freeze="none"), "unfreeze_at needs a frozen backbone"),
    (dict(unfreeze_at=8), "unfreeze_at needs"),
    (dict(optimizer="sgd"), "backbone_lr applies to an unfrozen backbone under Adam"),
    (dict(unfreeze_at=None, backbone_lr=1.0, bn_frozen=True), "bn_frozen applies"),
    (dict(bn_momentum=1.0), "bn_momentum must be between 0 and 1"),
    (dict(schedule="step"), "unknown schedule"),
])
def test_recipe_rows_that_cannot_train_as_written_are_refused(change, message):
    bad = dataclasses.replace(recipes.get("mnv2_ft96"), name="bad", **change)
    with pytest.raises(ValueError, match=message):
        recipes.check_recipes({"bad": bad})


def test_head_recipes_freeze_the_backbone_and_finetune_recipes_thaw_it_at_their_epoch_with_its_own_rate():
    from edgecifar.train.runner import _unfreeze_stage, build_model, compile_model

    head = build_model(recipes.get("mnv2_dropout"), weights="none")
    assert not head.get_layer("backbone").trainable and len(head.trainable_weights) == 2  # the Dense layer only

    recipe = recipes.get("mnv2_ft96")
    model = build_model(recipe, weights="none")
    compile_model(model, recipe, 10, recipe.unfreeze_at)
    assert not model.get_layer("backbone").trainable
    assert {bn.momentum for bn in batchnorm_layers(model)} == {0.99}
    _unfreeze_stage(model, recipe, 0, 10, None)
    assert not model.get_layer("backbone").trainable  # not yet: unfreeze_at is 1
    _unfreeze_stage(model, recipe, 1, 10, None)
    backbone = model.get_layer("backbone")
    assert backbone.trainable and all(bn.trainable for bn in batchnorm_layers(backbone))
    assert isinstance(model.optimizer, GroupAdam) and model.optimizer.scale == recipe.backbone_lr
    assert set(model.optimizer.group) == {v.path for v in backbone.trainable_weights}
    assert model.optimizer._learning_rate.total_steps == 10 * (recipe.epochs - 1)  # the schedule object

    frozen_bn = recipes.get("mnv2_ft96_bnfrozen")
    model = build_model(frozen_bn, weights="none")
    _unfreeze_stage(model, frozen_bn, 1, 10, None)
    assert {bn.momentum for bn in batchnorm_layers(model)} == {0.999}  # Keras' MobileNetV2 default
    assert model.get_layer("backbone").trainable and not any(bn.trainable for bn in batchnorm_layers(model))


@pytest.mark.slow
def test_a_finetune_run_killed_after_its_head_epoch_resumes_and_matches_an_uninterrupted_run(
        synthetic_archive, real_weights, tmp_path):
    import keras

    from edgecifar.train.runner import RunConfig, build_model, run

    epochs = 3
    cmd = [sys.executable, "-m", "edgecifar", "train", "mnv2_ft96", "--epochs", str(epochs), "--batch-size", "32",
           "--data", str(synthetic_archive), "--val-size", "50", "--weights", str(real_weights), "--quiet"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    raw = json.loads(state.read_text())
    assert raw["epochs_done"] == 1, "the run must be killed after the head epoch, before the next checkpoint"

    # The head epoch left the ImageNet backbone as it was, BatchNorm statistics included.
    imagenet = build_model(recipes.get("mnv2_ft96"), weights=str(real_weights)).get_layer("backbone")
    after_head = keras.models.load_model(killed / "checkpoint" / raw["model"]).get_layer("backbone")
    assert all(np.array_equal(a, b) for a, b in zip(imagenet.get_weights(), after_head.get_weights()))

    resumed = subprocess.run(cmd + ["--out", str(killed), "--resume"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = run(RunConfig(recipes.get("mnv2_ft96").with_overrides(epochs=epochs, batch_size=32),
                             out=tmp_path / "straight", data=str(synthetic_archive), val_size=50, progress=False,
                             weights=str(real_weights)))
    rows = lambda d: [r["val_loss"] for r in csv.DictReader((d / "history.csv").open())]  # noqa: E731
    assert rows(killed) == rows(tmp_path / "straight") and len(rows(killed)) == epochs
    assert json.loads((killed / "metrics.json").read_text())["test_accuracy"] == straight["test_accuracy"]

    trained = keras.models.load_model(killed / "model.keras").get_layer("backbone")
    moved = [not np.array_equal(a, b) for a, b in zip(imagenet.get_weights(), trained.get_weights())]
    assert all(moved)  # every kernel, scale, offset and moving statistic of the backbone changed once thawed


def test_reestimated_batchnorm_statistics_are_the_average_of_the_batch_statistics_whatever_the_momentum():
    import keras

    from edgecifar.train.finetune import reestimate_bn

    inp = keras.Input((2,))
    bn = keras.layers.BatchNormalization(momentum=0.999)
    model = keras.Model(inp, bn(inp))
    bn.trainable = False  # frozen for training: re-estimated all the same, and left frozen
    x = np.concatenate([np.full((4, 2), v, np.float32) + np.array([[-1, 0], [1, 0], [-1, 0], [1, 0]], np.float32)
                        for v in (1.0, 3.0, 8.0)])
    assert reestimate_bn(model, x, batch=4) == 3
    np.testing.assert_allclose(bn.moving_mean.numpy(), [4.0, 4.0], rtol=1e-6)      # mean of 1, 3 and 8
    np.testing.assert_allclose(bn.moving_variance.numpy(), [1.0, 0.0], atol=1e-6)  # each batch's own spread
    assert bn.momentum == 0.999 and not bn.trainable


def test_the_statistics_check_names_a_path_that_holds_no_model_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgecifar.train.finetune", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nothing'}: no model.keras, checkpoint or .keras file"


def test_the_statistics_check_leaves_a_model_without_batchnorm_as_it_was(trained_run, synthetic_archive):
    proc = subprocess.run([sys.executable, "-m", "edgecifar.train.finetune", str(trained_run), "--data",
                           str(synthetic_archive), "--val-size", "50", "--images", "200"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["val_images"] == 50 and line["images"] == 200 and line["batches"] == 2
    assert line["moving"] == line["reestimated"] == json.loads((trained_run / "metrics.json").read_text())["val_accuracy"]
