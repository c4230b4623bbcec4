"""edgecifar train: every recipe trains on CIFAR-format data, writes its run files atomically, is
deterministic for a seed and resumes a killed run from its last finished epoch, with the settings it started
with only (another --epochs, --batch-size... is refused in one line)."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import fresh_python, stopped_after_one_epoch
from edgecifar.errors import EdgeCifarError, ModelError
import research.recipes  # noqa: F401  (every recipe, shipped or experiment, must train)
from edgecifar.train import recipes
from edgecifar.train.runner import EarlyStopper, RunConfig, run

LADDER_AND_HEADS = ["baseline", "deeper", "bn_gap", "l2", "early_stop", "augment",
                    "mnv2_dense128", "mnv2_dropout", "resnet8"]


def _cfg(archive, out, recipe="baseline", epochs=1, batch=64, ema=None, **kw):
    return RunConfig(recipes.get(recipe).with_overrides(epochs=epochs, batch_size=batch, ema=ema), out=out,
                     data=str(archive), val_size=50, progress=False, weights="none", **kw)


def test_recipe_table_holds_every_required_name():
    assert set(LADDER_AND_HEADS) <= set(recipes.RECIPES)
    assert recipes.get("early_stop").early_stopping == 3 and recipes.get("early_stop").model == "l2"
    assert recipes.get("augment").augment == "seed" and recipes.get("mnv2_dropout").batch_size == 32


def test_a_recipe_name_already_in_the_table_is_refused_when_registered_again():
    with pytest.raises(ValueError, match="baseline: already registered"):
        recipes.register(dataclasses.replace(recipes.get("deeper"), name="baseline"))
    assert recipes.get("baseline").model == "baseline"


def test_the_product_lists_only_shipped_recipes_and_research_adds_the_experiments():
    shipped = subprocess.run([sys.executable, "-m", "edgecifar", "train", "--list"], capture_output=True, text=True)
    lab = subprocess.run([sys.executable, "-m", "research", "train", "--list"], capture_output=True, text=True)
    assert shipped.returncode == 0 and lab.returncode == 0, shipped.stderr + lab.stderr
    names = lambda out: {line.split()[0] for line in out.splitlines() if line.strip()}  # noqa: E731
    assert "edge_nano_kd160" in names(shipped.stdout) and "edge_fast_air" not in names(shipped.stdout)
    assert names(shipped.stdout) == set(recipes.SHIPPED) and names(lab.stdout) == set(recipes.RECIPES)


def test_every_shipped_recipe_says_which_results_row_measured_it_and_that_table_exists():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in recipes.SHIPPED:
        table, _, row = recipes.get(name).description.partition("measured: ")[2].partition(", row ")
        if table:
            text = (root / table).read_text()
            assert f"`{row.split()[0]}`" in text or f"| {row.split()[0]} |" in text, (name, table, row)


def _shortest(recipe: recipes.Recipe) -> dict:
    """Overrides that train each stage the recipe has (head, top blocks, all) for one epoch, early stopping
    counting from the first."""
    return {"epochs": 1 + (recipe.unfreeze_at is not None) + (recipe.unfreeze_all_at is not None),
            "unfreeze_at": 1 if recipe.unfreeze_at else None, "unfreeze_all_at": 2 if recipe.unfreeze_all_at else None,
            "early_stopping_from": 0}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_every_recipe_trains_each_of_its_stages_on_a_synthetic_archive(name, synthetic_archive, tmp_path):
    short = _shortest(recipes.get(name))
    metrics = run(RunConfig(recipes.get(name).with_overrides(batch_size=32, **short), out=tmp_path / name,
                            data=str(synthetic_archive), val_size=50, progress=False, weights="none"))
    assert metrics["epochs"] == short["epochs"] and metrics["val_images"] == 50 and metrics["test_images"] == 100
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert (tmp_path / name / "model.keras").exists()


@pytest.mark.slow
def test_a_run_writes_model_history_and_metrics_and_no_temporary_files(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("recipe", "seed", "epochs", "train_seconds", "images_per_s", "parameters", "macs",
                "val_accuracy", "val_images", "test_accuracy", "test_images", "data", "git_commit"):
        assert key in metrics
    assert metrics["data"]["fingerprint"] and metrics["parameters"] == 315_722
    rows = list(csv.DictReader((trained_run / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert not [p for p in trained_run.rglob(".*") if p.is_file()]


@pytest.mark.slow
def test_training_learns_the_separable_synthetic_classes(trained_run):
    assert json.loads((trained_run / "metrics.json").read_text())["test_accuracy"] > 0.5


@pytest.mark.slow
def test_the_saved_model_reloads_and_predicts_like_the_metrics_say(trained_run, synthetic_archive):
    import keras

    from edgecifar import data
    from edgecifar.metrics import accuracy

    ds = data.load(synthetic_archive)
    model = keras.models.load_model(trained_run / "model.keras")
    acc = accuracy(np.asarray(model.predict(ds.x_test.astype(np.float32), verbose=0)), ds.y_test)
    assert round(acc, 4) == json.loads((trained_run / "metrics.json").read_text())["test_accuracy"]


@pytest.mark.slow
def test_same_seed_gives_identical_runs_and_another_seed_does_not(synthetic_archive, tmp_path):
    a = run(_cfg(synthetic_archive, tmp_path / "a", "augment", epochs=2, batch=32, seed=3))
    b = run(_cfg(synthetic_archive, tmp_path / "b", "augment", epochs=2, batch=32, seed=3))
    run(_cfg(synthetic_archive, tmp_path / "c", "augment", epochs=2, batch=32, seed=4))
    hist = lambda d: [(r["loss"], r["val_loss"]) for r in csv.DictReader((d / "history.csv").open())]
    assert hist(tmp_path / "a") == hist(tmp_path / "b")
    assert hist(tmp_path / "a") != hist(tmp_path / "c")
    assert a["test_accuracy"] == b["test_accuracy"]


@pytest.mark.slow
def test_an_existing_run_is_not_overwritten_without_resume_or_overwrite(trained_run, synthetic_archive):
    with pytest.raises(EdgeCifarError, match="a run is already there; add --resume"):
        run(_cfg(synthetic_archive, trained_run))


def test_resume_without_a_checkpoint_says_so(synthetic_archive, tmp_path):
    with pytest.raises(EdgeCifarError, match="no checkpoint to resume from"):
        run(_cfg(synthetic_archive, tmp_path / "fresh", resume=True))


@pytest.mark.slow
@pytest.mark.parametrize("ema", [None, 0.9], ids=["plain", "weight-averaged"])
def test_a_killed_run_resumes_from_its_last_epoch_and_matches_an_uninterrupted_run(ema, synthetic_archive, tmp_path):
    epochs = 12
    cmd = [sys.executable, "-m", "edgecifar", "train", "baseline", "--epochs", str(epochs), "--batch-size", "32",
           "--data", str(synthetic_archive), "--val-size", "50", "--quiet", *(["--ema", str(ema)] if ema else [])]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = json.loads(state.read_text())["epochs_done"]
    assert 2 <= done_at_kill < epochs, "the run must be killed mid-way"
    assert not (killed / "model.keras").exists()

    resumed = subprocess.run(cmd + ["--out", str(killed), "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {killed} after epoch {done_at_kill}/{epochs}" in resumed.stderr.replace("\n", "")

    straight = run(_cfg(synthetic_archive, tmp_path / "straight", epochs=epochs, batch=32, ema=ema))
    after = json.loads((killed / "metrics.json").read_text())
    assert after["epochs"] == epochs
    rows = list(csv.DictReader((killed / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    ref = list(csv.DictReader((tmp_path / "straight" / "history.csv").open()))
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in ref]
    if ema:
        assert [r["ema_val_accuracy"] for r in rows] == [r["ema_val_accuracy"] for r in ref]
    assert after["test_accuracy"] == straight["test_accuracy"]


def test_early_stopper_stops_after_patience_epochs_without_improvement():
    stopper = EarlyStopper(patience=2)
    decisions = [stopper.update(e, loss) for e, loss in enumerate([1.0, 0.8, 0.9, 0.85, 0.7])]
    assert decisions == [False, False, False, True, False]
    assert stopper.best_epoch == 4


def test_one_cycle_rises_to_the_peak_then_falls_to_zero():
    from edgecifar.train.schedule import OneCycle

    sched = OneCycle(0.4, total_steps=100, warmup=0.2)
    lrs = [float(sched(s)) for s in range(101)]
    assert lrs[0] == 0.0 and abs(lrs[20] - 0.4) < 1e-6 and lrs[100] == 0.0
    assert all(a <= b for a, b in zip(lrs[:20], lrs[1:21])) and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))


def test_flip_translate_moves_whole_pixels_and_is_a_function_of_its_seed():
    import tensorflow as tf

    from edgecifar.train.augment import flip_translate

    images = tf.constant(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.float32))
    a = flip_translate(images, tf.constant([1, 2], tf.int64)).numpy()
    b = flip_translate(images, tf.constant([1, 2], tf.int64)).numpy()
    c = flip_translate(images, tf.constant([1, 3], tf.int64)).numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    originals = set(np.unique(images.numpy()))
    assert set(np.unique(a)) <= originals  # nearest sampling: no new pixel values
    # The centre 28x28 of every output is the (possibly mirrored) source shifted by at most 2 pixels.
    for out, src in zip(a, images.numpy()):
        candidates = [np.roll(np.roll(s, dy, 0), dx, 1)[2:30, 2:30] for s in (src, src[:, ::-1])
                      for dy in range(-2, 3) for dx in range(-2, 3)]
        assert any(np.array_equal(out[2:30, 2:30], c) for c in candidates)


def test_cutout_greys_one_square_of_at_most_8x8_pixels_per_image_and_is_a_function_of_its_seed():
    import tensorflow as tf

    from edgecifar.train.augment import CUTOUT_FILL, cutout

    images = tf.constant(np.full((16, 32, 32, 3), 3.0, np.float32))
    a = cutout(images, tf.constant([1, 2], tf.int64)).numpy()
    assert np.array_equal(a, cutout(images, tf.constant([1, 2], tf.int64)).numpy())
    assert not np.array_equal(a, cutout(images, tf.constant([1, 3], tf.int64)).numpy())
    for out in a:
        ys, xs = np.nonzero((out == CUTOUT_FILL).all(axis=2))
        assert 16 <= len(ys) <= 64 and set(np.unique(out)) == {3.0, CUTOUT_FILL}   # a square clipped at most in half per side
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)    # one filled rectangle
        assert ys.max() - ys.min() < 8 and xs.max() - xs.min() < 8


def test_the_seed_notebook_augmentation_keeps_shape_and_range():
    import tensorflow as tf

    from edgecifar.train.augment import seed_notebook

    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32))
    out = seed_notebook(images, tf.constant([0, 0], tf.int64)).numpy()
    assert out.shape == (4, 32, 32, 3) and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, images.numpy())


def test_a_checkpoint_keeps_the_dropout_random_state_that_a_keras_file_alone_loses(tmp_path):
    import keras

    from edgecifar.train.assemble import build_model, compile_model
    from edgecifar.train.checkpoint import State, load_checkpoint, save_checkpoint

    recipe = recipes.get("deeper")
    model = build_model(recipe)
    compile_model(model, recipe, 1, 1)
    x = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3)).astype(np.float32)
    model.fit(x, keras.utils.to_categorical(np.arange(64) % 10, 10), batch_size=32, verbose=0)
    state = lambda m: [np.asarray(v.value) for v in m.variables if v.path.endswith("seed_generator_state")]  # noqa: E731
    assert state(model) and state(model)[0][1] > 0  # dropout drew masks: its counter moved
    save_checkpoint(tmp_path, model, State(epochs_done=1))
    plain = keras.models.load_model(next((tmp_path / "checkpoint").glob("epoch-001.keras")))
    assert not all(np.array_equal(a, b) for a, b in zip(state(model), state(plain)))  # what Keras alone restores
    resumed, _ = load_checkpoint(tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(state(model), state(resumed)))


# --------------------------------------------------------------------------- resuming with other settings
# A checkpoint's optimizer holds a learning-rate schedule over the epochs and batches the run started with: resumed
# with a larger --epochs it trained the extra epochs at rate 0. A resumed run keeps its settings or is refused.

EDGECIFAR = str(Path(sys.executable).with_name("edgecifar"))  # the console script of this venv


@pytest.fixture(scope="module")
def stopped_run(synthetic_archive, tmp_path_factory) -> Path:
    """baseline (constant rate) started for 2 epochs of batch 32, stopped after the first."""
    return stopped_after_one_epoch(synthetic_archive, tmp_path_factory.mktemp("stopped") / "run",
                                    recipes.get("baseline"))


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of ``run_dir`` to resume."""
    return shutil.copytree(run_dir, tmp_path / run_dir.name)


@pytest.mark.slow
def test_a_checkpoint_records_the_recipe_settings_the_run_started_with(stopped_run):
    settings = json.loads((stopped_run / "checkpoint" / "state.json").read_text())["settings"]
    assert settings == {**{k: v for k, v in dataclasses.asdict(recipes.get("baseline").with_overrides(
        epochs=2, batch_size=32)).items() if k not in ("name", "description")}, "image_size": 32}


@pytest.mark.parametrize("flag, value, started, asked", [
    ("--epochs", "5", "epochs 2", "epochs 5"),
    ("--batch-size", "64", "batch_size 32", "batch_size 64"),
    ("--ema", "0.9", "ema None", "ema 0.9"),
], ids=["more-epochs", "other-batch-size", "weight-averaging-added"])
@pytest.mark.slow
def test_resume_with_other_settings_than_the_checkpoint_exits_2_with_one_line_naming_it_and_both_values(
        flag, value, started, asked, stopped_run, synthetic_archive, tmp_path):
    run_dir = _copy(stopped_run, tmp_path)
    state = run_dir / "checkpoint" / "state.json"
    before = state.read_bytes()
    options = {"--epochs": "2", "--batch-size": "32", flag: value}  # the run's own, one of them changed
    proc = subprocess.run([EDGECIFAR, "train", "baseline", "--out", str(run_dir), "--resume", "--quiet",
                           "--data", str(synthetic_archive), "--val-size", "50", *sum(options.items(), ())],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: {state}: this run started with {started} and cannot resume with {asked} (its "
                           "learning-rate schedule and records span the run it started); resume with its settings, "
                           "or start a new run folder (--out) for the new ones\n")
    assert state.read_bytes() == before and not (run_dir / "model.keras").exists()


@pytest.mark.slow
def test_a_checkpoint_that_records_no_settings_is_refused_in_one_line_not_resumed_unchecked(
        stopped_run, synthetic_archive, tmp_path):
    run_dir = _copy(stopped_run, tmp_path)
    state = run_dir / "checkpoint" / "state.json"
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "settings"}))
    proc = subprocess.run([EDGECIFAR, "train", "baseline", "--out", str(run_dir), "--resume", "--quiet", "--epochs",
                           "2", "--batch-size", "32", "--data", str(synthetic_archive), "--val-size", "50"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: {state}: records no settings the run started with (written before they were "
                           "recorded), so resuming could not keep its learning-rate schedule; start a new run folder "
                           "(--out), or --overwrite this one\n")


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_before_tensorflow_loads(stopped_run, synthetic_archive, tmp_path):
    run_dir = _copy(stopped_run, tmp_path)
    args = ["train", "baseline", "--out", str(run_dir), "--resume", "--epochs", "5", "--batch-size", "32",
            "--data", str(synthetic_archive), "--val-size", "50", "--quiet"]
    code = ("import sys, json\n"
            "from click.testing import CliRunner\n"
            "from edgecifar.cli import main\n"
            f"r = CliRunner().invoke(main, {args!r})\n"
            "print(json.dumps([r.exit_code, 'tensorflow' in sys.modules]))")
    assert json.loads(fresh_python(code)) == [2, False]


@pytest.mark.slow
def test_resume_with_the_settings_the_run_started_with_finishes_it(stopped_run, synthetic_archive, tmp_path):
    run_dir = _copy(stopped_run, tmp_path)
    metrics = run(_cfg(synthetic_archive, run_dir, epochs=2, batch=32, resume=True))
    assert metrics["epochs"] == 2
    assert [int(r["epoch"]) for r in csv.DictReader((run_dir / "history.csv").open())] == [1, 2]


# --------------------------------------------------------------------------- overrides checked as recipe rows

def test_an_epochs_override_at_or_below_unfreeze_at_is_refused_with_the_recipe_check_message():
    with pytest.raises(ModelError) as refused:
        recipes.get("mnv2_ft96").with_overrides(epochs=1)
    with pytest.raises(ValueError) as row_check:
        recipes.check_recipes({"mnv2_ft96": dataclasses.replace(recipes.get("mnv2_ft96"), epochs=1)})
    assert str(refused.value) == str(row_check.value) == (
        "recipe mnv2_ft96: unfreeze_at needs a frozen backbone and a value in 1..epochs-1 "
        "(freeze backbone, unfreeze_at 1, epochs 1)")


def test_an_epochs_override_that_keeps_every_named_epoch_inside_the_run_is_accepted():
    assert recipes.get("mnv2_ft96").with_overrides(epochs=2).epochs == 2
    assert recipes.get("mnv2_ft96_top").with_overrides(epochs=4).epochs == 4
    assert recipes.get("early_stop_sound").with_overrides(epochs=11).epochs == 11


@pytest.mark.parametrize("recipe, epochs, message", [
    ("mnv2_ft96", "1", "recipe mnv2_ft96: unfreeze_at needs a frozen backbone and a value in 1..epochs-1 "
                       "(freeze backbone, unfreeze_at 1, epochs 1)"),
    ("mnv2_ft96_top", "3", "recipe mnv2_ft96_top: unfreeze_all_at needs unfreeze_top and a value between "
                           "unfreeze_at and epochs, exclusive (unfreeze_top 4, unfreeze_at 1, unfreeze_all_at 3, "
                           "epochs 3)"),
    ("early_stop_sound", "10", "recipe early_stop_sound: early_stopping_from must be in 0..epochs-1 "
                               "(early_stopping_from 10, epochs 10)"),
])
def test_train_with_an_epochs_override_the_recipe_cannot_train_exits_2_with_one_line(
        recipe, epochs, message, tmp_path):
    absent = tmp_path / "absent.tar.gz"  # were the override accepted, the data load would fail, downloading nothing
    cli = [EDGECIFAR] if recipe in recipes.SHIPPED else [sys.executable, "-m", "research"]   # an experiment's
    proc = subprocess.run([*cli, "train", recipe, "--epochs", epochs, "--out", str(tmp_path / "run"),
                           "--data", str(absent)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"error: {message}\n")
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_before_its_first_file_leaves_no_run_folder(synthetic_archive, tmp_path):
    out = tmp_path / "mnv2"
    missing = tmp_path / "missing.h5"
    proc = subprocess.run([EDGECIFAR, "train", "mnv2_dropout", "--out", str(out), "--weights", str(missing),
                           "--data", str(synthetic_archive), "--val-size", "50", "--epochs", "1", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == (f"error: {missing}: no MobileNetV2 weights file (width 0.35 needs "
                                            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5)")
    assert "Traceback" not in proc.stderr and not out.exists()
