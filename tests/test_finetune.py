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

import research.recipes  # noqa: F401  (the experiment recipes these tests read)
from edgecifar.train import recipes
from edgecifar.train.finetune import batchnorm_layers, stale_share
from edgecifar.train.optimizers import GroupAdam


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
    (dict(unfreeze_top=4, unfreeze_at=None, backbone_lr=1.0), "unfreeze_top needs unfreeze_at"),
    (dict(unfreeze_top=0), r"unfreeze_top must be in 1\.\.16"),
    (dict(unfreeze_top=17), r"unfreeze_top must be in 1\.\.16"),
    (dict(unfreeze_all_at=3), "unfreeze_all_at needs unfreeze_top"),
    (dict(unfreeze_top=4, unfreeze_all_at=1), "unfreeze_all_at needs unfreeze_top and a value between"),
    (dict(unfreeze_top=4, unfreeze_all_at=8), "unfreeze_all_at needs unfreeze_top and a value between"),
])
def test_recipe_rows_that_cannot_train_as_written_are_refused(change, message):
    bad = dataclasses.replace(recipes.get("mnv2_ft96"), name="bad", **change)
    with pytest.raises(ValueError, match=message):
        recipes.check_recipes({"bad": bad})


def test_head_recipes_freeze_the_backbone_and_finetune_recipes_thaw_it_at_their_epoch_with_its_own_rate():
    from edgecifar.train.assemble import build_model, compile_model
    from edgecifar.train.runner import _unfreeze_stage

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


def _top_recipe(**changes):
    """mnv2_ft96_top on 32x32 inputs (MobileNetV2's smallest), small enough to build and train in seconds."""
    return dataclasses.replace(recipes.get("mnv2_ft96_top"), model_kwargs={"size": 32}, **changes)


def _trainable_layers(backbone) -> set[str]:
    return {layer.name for layer in backbone.layers if layer.trainable and layer.weights}


def test_the_top_n_blocks_are_keras_mobilenetv2s_last_n_numbered_blocks_and_the_1x1_convolution_after_them():
    import keras

    from edgecifar.errors import EdgeCifarError
    from edgecifar.train.finetune import top_block_layers

    backbone = keras.applications.MobileNetV2(weights=None, alpha=0.35, input_shape=(96, 96, 3), include_top=False)
    assert [layer.name for layer in top_block_layers(backbone, 1)] == [
        "block_16_expand", "block_16_expand_BN", "block_16_expand_relu", "block_16_depthwise", "block_16_depthwise_BN",
        "block_16_depthwise_relu", "block_16_project", "block_16_project_BN", "Conv_1", "Conv_1_bn", "out_relu"]
    top4 = [layer.name for layer in top_block_layers(backbone, 4)]
    # blocks 13 (a _pad, no _add: it changes the channels), 14, 15 (an _add each), 16 (neither): 9 + 9 + 9 + 8 layers
    assert top4[0] == "block_13_expand" and "block_13_pad" in top4 and "block_14_add" in top4 and len(top4) == 38
    top7 = {layer.name for layer in top_block_layers(backbone, 7)}
    assert "block_10_expand" in top7 and "block_1_expand" not in top7 and "block_9_add" not in top7
    every = {layer.name for layer in top_block_layers(backbone, 16)}  # block 0 and the stem stay frozen
    assert "block_1_expand" in every and not every & {"input_layer", "Conv1", "bn_Conv1", "Conv1_relu",
                                                     "expanded_conv_depthwise", "expanded_conv_project_BN"}
    assert len(every) == len(backbone.layers) - 9
    with pytest.raises(EdgeCifarError, match="has 16 numbered MobileNetV2 blocks; cannot unfreeze the top 17"):
        top_block_layers(backbone, 17)


def test_a_top_first_recipe_thaws_the_top_4_blocks_after_the_head_epoch_and_the_whole_backbone_at_unfreeze_all_at():
    from edgecifar.train.finetune import top_block_layers
    from edgecifar.train.assemble import build_model, compile_model
    from edgecifar.train.runner import _unfreeze_stage

    recipe = _top_recipe()
    model = build_model(recipe, weights="none")
    backbone = model.get_layer("backbone")
    top4 = {layer.name for layer in top_block_layers(backbone, 4) if layer.weights}
    compile_model(model, recipe, 10, recipe.unfreeze_at)
    assert not backbone.trainable and not _trainable_layers(backbone)

    _unfreeze_stage(model, recipe, 1, 10, None)
    assert backbone.trainable and _trainable_layers(backbone) == top4
    top4_bn = {n for n in top4 if n.endswith(("BN", "bn"))}
    assert {bn.name for bn in batchnorm_layers(backbone) if bn.trainable} == top4_bn
    assert isinstance(model.optimizer, GroupAdam) and model.optimizer.scale == recipe.backbone_lr
    assert set(model.optimizer.group) == {v.path for v in backbone.trainable_weights}
    assert model.optimizer._learning_rate.total_steps == 10 * (recipe.epochs - 1)
    _unfreeze_stage(model, recipe, 2, 10, None)
    assert _trainable_layers(backbone) == top4  # nothing happens between the stages

    _unfreeze_stage(model, recipe, 3, 10, None)
    assert _trainable_layers(backbone) == {layer.name for layer in backbone.layers if layer.weights}
    assert set(model.optimizer.group) == {v.path for v in backbone.trainable_weights}
    assert model.optimizer._learning_rate.total_steps == 10 * (recipe.epochs - 3)

    frozen_bn = _top_recipe(bn_frozen=True)
    model = build_model(frozen_bn, weights="none")
    _unfreeze_stage(model, frozen_bn, 1, 10, None)
    backbone = model.get_layer("backbone")
    assert _trainable_layers(backbone) == top4 - top4_bn
    assert not any(bn.trainable for bn in batchnorm_layers(model))


@pytest.mark.slow
def test_a_run_killed_between_the_stages_resumes_training_only_the_top_blocks(
        synthetic_archive, tmp_path, monkeypatch):
    from edgecifar.train import runner
    from edgecifar.train.checkpoint import load_checkpoint
    from edgecifar.train.finetune import top_block_layers

    class Killed(Exception):
        pass

    def save_then_die_after(epochs_done):
        def save(run_dir, model, state, ema=None):
            save_checkpoint(run_dir, model, state, ema)
            if state.epochs_done == epochs_done:
                raise Killed
        return save

    # 4 epochs: the head, the top 4 blocks for 2, everything for the last; killed after epochs 2 and 3 (the stage
    # after is test_a_top_first_recipe_thaws_...'s: a resumed run reaches it through the same _unfreeze_stage).
    save_checkpoint = runner.save_checkpoint
    cfg = runner.RunConfig(_top_recipe(epochs=4, batch_size=32), out=tmp_path / "run", data=str(synthetic_archive),
                           val_size=50, progress=False, weights="none")
    monkeypatch.setattr(runner, "save_checkpoint", save_then_die_after(2))
    with pytest.raises(Killed):
        runner.run(cfg)
    model, state = load_checkpoint(tmp_path / "run")  # Keras keeps each layer's trainable flag in its config
    backbone = model.get_layer("backbone")
    top4 = {layer.name for layer in top_block_layers(backbone, 4) if layer.weights}
    assert state.epochs_done == 2 and _trainable_layers(backbone) == top4
    assert set(model.optimizer.group) == {v.path for v in backbone.trainable_weights}

    def moved(before, after) -> dict[str, bool]:
        """Per backbone layer with weights: did every weight (moving statistics included) change, or none?"""
        out = {}
        for a, b in zip(before.get_layer("backbone").layers, after.get_layer("backbone").layers):
            changed = {not np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights())}
            if changed:
                assert len(changed) == 1, f"{a.name}: some weights moved, some not"
                out[a.name] = changed.pop()
        return out

    resume = dataclasses.replace(cfg, resume=True)
    monkeypatch.setattr(runner, "save_checkpoint", save_then_die_after(3))
    with pytest.raises(Killed):
        runner.run(resume)
    after_top = load_checkpoint(tmp_path / "run")[0]
    assert {name for name, m in moved(model, after_top).items() if m} == top4


@pytest.mark.slow
def test_a_finetune_run_killed_after_its_head_epoch_resumes_and_matches_an_uninterrupted_run(
        synthetic_archive, real_weights, tmp_path):
    import keras

    from edgecifar.train.assemble import build_model
    from edgecifar.train.runner import RunConfig, run

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


@pytest.mark.slow
def test_the_statistics_check_leaves_a_model_without_batchnorm_as_it_was(trained_run, synthetic_archive):
    proc = subprocess.run([sys.executable, "-m", "edgecifar.train.finetune", str(trained_run), "--data",
                           str(synthetic_archive), "--val-size", "50", "--images", "200"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["val_images"] == 50 and line["images"] == 200 and line["batches"] == 2
    assert line["moving"] == line["reestimated"] == json.loads((trained_run / "metrics.json").read_text())["val_accuracy"]
