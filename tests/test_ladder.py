"""bench.ladder: seeds of a recipe aggregate into one row per rung and protocol beside the seed notebook's figure."""

from __future__ import annotations

import pytest

from research.ladder import markdown, summarise


def _run(recipe, seed, test, val=0.5, epochs=10):
    return {"recipe": recipe, "seed": seed, "test_accuracy": test, "val_accuracy": val, "epochs": epochs,
            "test_images": 1000, "train_images": 35000, "train_seconds": 90.0}


def test_seeds_of_a_recipe_become_one_row_with_mean_and_range_in_ladder_order():
    rows = summarise([_run("deeper", 1, 0.70), _run("baseline", 0, 0.60), _run("baseline", 1, 0.64),
                      _run("baseline", 2, 0.62)])
    assert [r.recipe for r in rows] == ["baseline", "deeper"]
    base = rows[0]
    assert base.seeds == (0, 1, 2) and abs(base.test_mean - 0.62) < 1e-12
    assert (base.test_min, base.test_max) == (0.60, 0.64) and base.reference == 0.689


def test_markdown_names_the_test_image_count_and_reference():
    text = markdown(summarise([_run("augment", 0, 0.8)]))
    assert "| `augment` | notebook | 1 | 80.0% (80.0%–80.0%) | 1,000 |" in text and "76.9%" in text


def test_recipes_outside_the_ladder_follow_it_without_a_reference():
    rows = summarise([_run("resnet8", 0, 0.86), _run("l2", 0, 0.7)])
    assert [r.recipe for r in rows] == ["l2", "resnet8"] and rows[1].reference is None
    assert [r.protocol for r in rows] == ["notebook", "—"]  # resnet8 is no rung of the notebook's ladder


def test_a_variant_rung_follows_the_rung_it_varies_beside_that_rungs_notebook_figure():
    rows = summarise([_run("augment_light_sound", 0, 0.79), _run("mnv2_dense128", 0, 0.78),
                      _run("augment_sound", 0, 0.74), _run("augment", 0, 0.66)])
    assert [(r.recipe, r.protocol) for r in rows] == [("augment", "notebook"), ("augment", "sound"),
                                                      ("augment_light", "sound"), ("mnv2_dense128", "notebook")]
    assert rows[2].reference == 0.769


def test_markdown_states_training_images_and_minutes():
    text = markdown(summarise([_run("baseline", 0, 0.7), _run("baseline", 1, 0.7)]))
    assert "| 10, 10 | 1.5 | 68.9% |" in text
    assert "Training images per run: 35,000" in text


def test_the_validation_range_covers_the_last_epochs_of_every_seed(tmp_path):
    import json

    from research.ladder import LAST_EPOCHS, load_runs

    for seed, curve in ((0, [0.1, 0.9, 0.50, 0.70, 0.60, 0.65, 0.62]), (1, [0.2, 0.3, 0.58, 0.66, 0.61, 0.64, 0.63])):
        run = tmp_path / f"l2-seed{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps(_run("l2", seed, 0.6)))
        (run / "history.csv").write_text("epoch,val_accuracy\n" + "".join(f"{i + 1},{v}\n" for i, v in enumerate(curve)))
    assert LAST_EPOCHS == 5
    (row,) = summarise(load_runs(tmp_path))
    assert (row.val_last_min, row.val_last_max) == (0.50, 0.70)
    assert "| 50.0%–70.0% |" in markdown([row])


def test_runs_without_a_history_leave_the_range_empty():
    (row,) = summarise([_run("baseline", 0, 0.7)])
    assert row.val_last_min is None and "| — |" in markdown([row])


def test_sound_protocol_runs_become_their_own_row_after_the_notebook_row_of_the_same_rung():
    rows = summarise([_run("bn_gap_sound", 0, 0.80), _run("deeper", 0, 0.74), _run("bn_gap", 0, 0.66),
                      _run("bn_gap_sound", 1, 0.82)])
    assert [(r.recipe, r.protocol) for r in rows] == [("deeper", "notebook"), ("bn_gap", "notebook"),
                                                      ("bn_gap", "sound")]
    sound = rows[2]
    assert sound.seeds == (0, 1) and abs(sound.test_mean - 0.81) < 1e-12 and sound.reference == 0.731
    assert "| `bn_gap` | sound | 2 | 81.0% (80.0%–82.0%) |" in markdown(rows)


def test_every_sound_recipe_is_its_rung_with_a_decaying_rate_stated_bn_momentum_and_validation_selection():
    from edgecifar.train import recipes

    for rung in recipes.LADDER_RUNGS:
        notebook, sound = recipes.get(rung), recipes.get(f"{rung}_sound")
        assert (sound.model, sound.batch_size, sound.augment, sound.optimizer) == \
               (notebook.model, notebook.batch_size, notebook.augment, notebook.optimizer)
        assert sound.epochs == recipes.SOUND_EPOCHS.get(rung, notebook.epochs)
        assert notebook.schedule == "constant" and sound.schedule == "cosine" and sound.bn_momentum == 0.99
        assert sound.select == ("val_loss" if notebook.early_stopping else "val_accuracy")
        assert sound.early_stopping_from == (sound.epochs // 2 if notebook.early_stopping else 0)
        assert notebook.early_stopping_from == 0
        assert recipes.ladder_protocol(sound.name) == (rung, "sound")
        assert recipes.ladder_protocol(rung) == (rung, "notebook")


def test_a_table_from_before_the_protocol_column_keeps_its_rows_as_notebook_rows_beside_new_runs(tmp_path):
    import json

    from research.ladder import main

    table = tmp_path / "ladder.csv"
    table.write_text("recipe,seeds,test_mean,test_min,test_max,test_images,val_mean,val_last_min,val_last_max,"
                     "epochs,train_images,train_minutes,seed_notebook\n"
                     "bn_gap,0 1 2,0.6607,0.6480,0.6820,1000,0.6609,0.6050,0.7190,20 20 20,35000,13.31,0.731\n"
                     "mnv2_dropout,0,0.7590,0.7590,0.7590,1000,0.7724,,,10,35000,7.27,0.856\n")
    runs = tmp_path / "runs"
    (runs / "bn_gap_sound-seed0").mkdir(parents=True)
    (runs / "bn_gap_sound-seed0" / "metrics.json").write_text(json.dumps(_run("bn_gap_sound", 0, 0.8, epochs=20)))
    main([str(runs), "--csv", str(table), "--out", str(tmp_path / "ladder.md")])
    text = (tmp_path / "ladder.md").read_text()
    assert "| `bn_gap` | notebook | 3 | 66.1% (64.8%–68.2%) | 1,000 | 66.1% | 60.5%–71.9% | 20, 20, 20 | 13.3 | 73.1% |" \
        in text
    assert "| `bn_gap` | sound | 1 | 80.0% (80.0%–80.0%) |" in text and "| `mnv2_dropout` | notebook | 1 |" in text
    assert table.read_text().splitlines()[0].startswith("recipe,protocol,seeds,")
    # written again, read back again: the same table
    main([str(tmp_path / "no-runs"), "--csv", str(table), "--out", str(tmp_path / "again.md")])
    assert (tmp_path / "again.md").read_text() == text


def test_a_ladder_table_that_is_not_one_is_named_in_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "ladder.csv"
    bad.write_text("file,size\nx.tflite,3\n")
    proc = subprocess.run([sys.executable, "-m", "research.ladder", str(tmp_path), "--csv", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"{bad}: not a ladder table written by this command (KeyError: 'recipe')"


def test_selection_by_validation_accuracy_keeps_the_first_epoch_of_the_highest_accuracy():
    from edgecifar.train.runner import EarlyStopper

    stopper = EarlyStopper(patience=None)
    assert not any(stopper.update(e, -acc) for e, acc in enumerate([0.50, 0.71, 0.69, 0.71, 0.70]))
    assert stopper.best_epoch == 1


def test_patience_ignores_the_epochs_before_its_start_neither_counting_nor_keeping_them():
    from edgecifar.train.runner import EarlyStopper

    stopper = EarlyStopper(patience=2, start=3)
    losses = [0.5, 0.9, 1.0, 0.8, 0.7, 0.75, 0.72]
    assert [stopper.update(e, loss) for e, loss in enumerate(losses)] == [False] * 6 + [True]
    assert stopper.best_epoch == 4   # epoch 0's lower loss came before the start


@pytest.mark.slow
def test_a_sound_protocol_run_ships_the_epoch_with_the_best_validation_accuracy(synthetic_archive, tmp_path):
    import csv

    from edgecifar.train import recipes
    from edgecifar.train.runner import RunConfig, run

    metrics = run(RunConfig(recipes.get("bn_gap_sound").with_overrides(epochs=4, batch_size=32), out=tmp_path / "run",
                            data=str(synthetic_archive), val_size=50, progress=False))
    history = [float(r["val_accuracy"]) for r in csv.DictReader((tmp_path / "run" / "history.csv").open())]
    best = max(range(len(history)), key=lambda i: (history[i], -i))
    assert metrics["best_epoch"] == best + 1 and metrics["epochs"] == 4
    assert metrics["val_accuracy"] == pytest.approx(history[best], abs=1e-4)
    assert metrics["recipe_settings"]["select"] == "val_accuracy" and metrics["recipe_settings"]["schedule"] == "cosine"
