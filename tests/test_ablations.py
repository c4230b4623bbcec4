"""The ablation table: one row per run, its varied settings and its validation accuracy from metrics.json."""

from __future__ import annotations

import csv
import json

import pytest

from research.ablations import main


@pytest.mark.slow
def test_each_run_becomes_a_row_with_its_settings_and_its_accuracies(trained_run, tmp_path, capsys):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    main([str(trained_run), str(tmp_path / "not-a-run"), "--out", str(tmp_path / "a.md"), "--csv", str(tmp_path / "a.csv")])
    text = (tmp_path / "a.md").read_text()
    assert text == capsys.readouterr().out
    line = next(ln for ln in text.splitlines() if trained_run.name in ln)
    assert f"{metrics['val_accuracy']:.2%} ({metrics['val_images']:,})" in line
    assert f"| — | {metrics['recipe_settings']['label_smoothing']:g} | — | no | — | scale+shift | none |" in line
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert len(rows) == 1 and float(rows[0]["val_accuracy"]) == metrics["val_accuracy"]


def test_the_batchnorm_column_says_bias_only_and_the_recipes_momentum_when_a_recipe_sets_them():
    from research.ablations import batchnorm

    assert batchnorm({"model_kwargs": {}, "bn_momentum": None}) == "scale+shift"
    assert batchnorm({"model_kwargs": {"bn_scale": False}, "bn_momentum": 0.6}) == "bias only, momentum 0.6"


def test_the_model_options_column_names_the_activation_and_leaves_batchnorm_to_its_own_column():
    from research.ablations import model_options

    assert model_options({"model_kwargs": {"act": "relu", "bn_scale": False}}) == "act=relu"
    assert model_options({"model_kwargs": {}}) == "—"
