"""Weight averaging (train/ema.py): training is untouched, the shipped model holds the average."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from edgecifar.errors import EdgeCifarError
from edgecifar.train import recipes
from edgecifar.train.ema import warmed_decay
from edgecifar.train.runner import RunConfig, run


def _cfg(archive, out, ema=None, **overrides):
    recipe = recipes.get("baseline").with_overrides(epochs=2, batch_size=32, ema=ema, **overrides)
    return RunConfig(recipe, out=out, data=str(archive), val_size=50, progress=False, seed=1)


def test_the_decay_warms_up_then_holds_at_its_setting():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_decay(0.999, 90) == pytest.approx(0.91)
    assert warmed_decay(0.999, 10**6) == 0.999


@pytest.mark.slow
def test_averaging_leaves_training_alone_and_ships_the_average(synthetic_archive, tmp_path):
    import keras

    run(_cfg(synthetic_archive, tmp_path / "plain"))
    averaged = run(_cfg(synthetic_archive, tmp_path / "ema", ema=0.9))
    rows = {name: list(csv.DictReader((tmp_path / name / "history.csv").open())) for name in ("plain", "ema")}
    assert [r["loss"] for r in rows["plain"]] == [r["loss"] for r in rows["ema"]]
    assert all(0.0 <= float(r["ema_val_accuracy"]) <= 1.0 for r in rows["ema"])
    assert averaged["recipe_settings"]["ema"] == 0.9
    assert averaged["val_accuracy"] == pytest.approx(float(rows["ema"][-1]["ema_val_accuracy"]), abs=1e-3)
    last = keras.models.load_model(tmp_path / "plain" / "model.keras").get_weights()
    shipped = keras.models.load_model(tmp_path / "ema" / "model.keras").get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(last, shipped))


def test_averaging_with_early_stopping_is_refused_in_one_line(synthetic_archive, tmp_path):
    with pytest.raises(EdgeCifarError, match="weight averaging"):
        run(_cfg(synthetic_archive, tmp_path / "both", ema=0.9, early_stopping=3, select="val_loss"))


@pytest.mark.slow
def test_a_bf16_run_ships_the_average_it_evaluated_and_reports_it_in_float32(synthetic_archive, tmp_path):
    """history.csv's ema_val_accuracy is the average run in the training precision (bf16); metrics.json's
    val_accuracy is the shipped float32 model, which holds exactly that average (BatchNorm statistics included):
    the two figures may differ, by bf16 rounding only (train/runner.py ``_evaluate``)."""
    import keras

    from edgecifar import data as cifar
    from edgecifar.metrics import accuracy
    from edgecifar.train.assemble import build_model
    from edgecifar.train.pipeline import predict
    from edgecifar.train.runner import _evaluate

    recipe = recipes.get("bn_gap").with_overrides(epochs=2, batch_size=32, ema=0.9, mixed_bfloat16=True)
    cfg = RunConfig(recipe, out=tmp_path / "bf16", data=str(synthetic_archive), val_size=50, progress=False, seed=1)
    metrics = run(cfg)
    last = list(csv.DictReader((tmp_path / "bf16" / "history.csv").open()))[-1]
    ds = cifar.load(str(synthetic_archive))
    _, val = cifar.stratified_split(ds.y_train, 50, seed=0)
    x_val, y_val = ds.x_train[val], ds.y_train[val]

    shipped = keras.models.load_model(tmp_path / "bf16" / "model.keras", compile=False)
    with np.load(tmp_path / "bf16" / "checkpoint" / "epoch-002.ema.npz") as z:
        average = [z[f"w{i}"] for i in range(len(z.files) - 1)]
    floats = [np.asarray(w.value) for w in shipped.weights if "float" in str(w.dtype)]
    assert len(floats) == len(average) and all(np.array_equal(a, b) for a, b in zip(floats, average))
    assert any("moving_mean" in w.path for w in shipped.weights)            # BatchNorm statistics are averaged too

    assert metrics["val_accuracy"] == round(accuracy(predict(shipped, x_val), y_val), 4)
    training = build_model(cfg.recipe)                                      # the bf16 network that trained
    training.set_weights(shipped.get_weights())
    training.compile(loss="categorical_crossentropy", metrics=["accuracy"])
    assert _evaluate(training, x_val, y_val)[1] == float(last["ema_val_accuracy"])
    assert not np.array_equal(predict(training, x_val), predict(shipped, x_val))  # bf16 and float32 round apart
