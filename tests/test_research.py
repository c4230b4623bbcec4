"""research/: the run list is the one place that says which folder holds which run; the make targets train from it
and the table makers read the same folders, naming each run as the list does. None of it ships in the wheel."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from research import runs

ROOT = Path(__file__).resolve().parents[1]


def _finished_run(folder: Path, recipe: str, seed: int, test: float) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "recipe": recipe, "seed": seed, "test_accuracy": test, "val_accuracy": test, "epochs": 60,
        "test_images": 1000, "train_images": 35000, "train_seconds": 60.0}))


def test_every_run_has_its_own_folder_and_a_registered_recipe():
    folders = [r.folder for r in runs.RUNS]
    assert len(folders) == len(set(folders))
    twice = (*runs.RUNS, dataclasses.replace(runs.RUNS[0], recipe="deeper"))
    with pytest.raises(ValueError, match="listed twice"):
        runs._check(twice)
    with pytest.raises(ValueError, match="unknown recipes \\['no_such_recipe'\\]"):
        runs._check((dataclasses.replace(runs.RUNS[0], recipe="no_such_recipe"),))


def test_the_make_targets_take_the_zoo_recipes_from_the_run_list():
    out = subprocess.run([sys.executable, "-m", "research.runs", "names", "zoo"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()
    assert out == [r.recipe for r in runs.RUNS if r.group == "zoo"] and "edge_nano_kd160" in out


def test_a_run_trains_with_the_seed_epochs_and_validation_split_the_list_gives_it():
    run = runs.Run("ladder", "l2_e60_sound", "ladder28/l2_sound_e60-seed1", seed=1, epochs=60, val_size=5000)
    assert run.flags() == ["--seed", "1", "--val-size", "5000", "--epochs", "60"]
    assert runs.Run("zoo", "edge_best", "zoo/edge_best").flags() == ["--seed", "0", "--val-size", "2000"]


def test_the_ladder_table_names_a_listed_run_as_the_list_does_not_as_its_metrics_do(tmp_path):
    listed = [r for r in runs.group("ladder") if r.recipe == "l2_e60_sound"]
    for r in listed:   # trained as `l2_sound --epochs 60`, before the research recipe had a name
        _finished_run(tmp_path / "lab" / r.folder, "l2_sound", r.seed, 0.78)
    env = {**os.environ, "EDGECIFAR_RUNS": str(tmp_path / "lab")}
    out = tmp_path / "ladder.md"
    subprocess.run([sys.executable, "-m", "research.ladder", "--group", "ladder", "--out", str(out)], cwd=ROOT,
                   env=env, check=True)
    table = out.read_text()
    assert f"| `l2_e60` | sound | {len(listed)} | 78.0%" in table and "| `l2` |" not in table


def test_the_ablations_table_keeps_rows_whose_run_folders_are_gone_and_replaces_rows_read_again(tmp_path):
    from research import ablations

    def finished(name: str, val: float) -> Path:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        (folder / "metrics.json").write_text(json.dumps({
            "recipe": "edge_nano_kd160", "seed": 0, "epochs": 80, "val_accuracy": val, "val_images": 2000,
            "test_accuracy": 0.88, "test_images": 1000, "recipe_settings": {"model_kwargs": {"stem": [32]}}}))
        return folder

    table, md = tmp_path / "a.csv", tmp_path / "a.md"
    ablations.main([str(finished("gone", 0.87)), str(finished("again", 0.86)), "--csv", str(table), "--out", str(md)])
    import shutil

    shutil.rmtree(tmp_path / "gone")
    ablations.main([str(finished("again", 0.885)), str(finished("new", 0.89)), "--csv", str(table), "--out", str(md)])
    rows = ablations.from_csv(table.read_text())
    assert [(r.run, r.val_accuracy) for r in rows] == [("gone", 0.87), ("again", 0.885), ("new", 0.89)]
    assert "stem=[32]" in md.read_text()


def test_research_is_not_a_package_of_the_wheel():
    setup = (ROOT / "setup.cfg").read_text()
    packages = setup.split("packages =", 1)[1].split("include_package_data", 1)[0].split()
    assert packages and not any(p.startswith("research") for p in packages)
