"""bench.ladder: seeds of a recipe aggregate into one row beside the seed notebook's figure."""

from __future__ import annotations


from edgecifar.bench.ladder import markdown, summarise


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
    assert "| `augment` | 1 | 80.0% (80.0%–80.0%) | 1,000 |" in text and "76.9%" in text


def test_recipes_outside_the_ladder_follow_it_without_a_reference():
    rows = summarise([_run("resnet8", 0, 0.86), _run("l2", 0, 0.7)])
    assert [r.recipe for r in rows] == ["l2", "resnet8"] and rows[1].reference is None


def test_markdown_states_training_images_and_minutes():
    text = markdown(summarise([_run("baseline", 0, 0.7), _run("baseline", 1, 0.7)]))
    assert "| 10, 10 | 1.5 | 68.9% |" in text
    assert "Training images per run: 35,000" in text


def test_the_validation_range_covers_the_last_epochs_of_every_seed(tmp_path):
    import json

    from edgecifar.bench.ladder import LAST_EPOCHS, load_runs

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
