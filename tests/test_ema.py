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
        run(_cfg(synthetic_archive, tmp_path / "both", ema=0.9, early_stopping=3))
