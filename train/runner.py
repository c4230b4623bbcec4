"""Train a recipe on CIFAR-10: the orchestration of a run, its epoch loop, and the per-feature steps inside it.

A run directory holds ``checkpoint/`` (the last finished epoch, with optimizer state: train/checkpoint.py), and when
the run ends ``model.keras`` (float32, ready to export), ``history.csv`` and ``metrics.json``. Every file is written
to a temporary name and renamed. The pieces live by job: the data in train/pipeline.py, the model in
train/assemble.py, checkpoints and the resume policy in train/checkpoint.py, the run's options in train/config.py.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgecifar import LABELS
from edgecifar import data as cifar
from edgecifar.errors import EdgeCifarError
from edgecifar.fileio import atomic_path, check_writable_dir, write_json, write_text
from edgecifar.host import cpu_features, cpu_model
from edgecifar.runs import git_commit
from edgecifar.train.assemble import build_model, compile_model, float32_copy
from edgecifar.train.checkpoint import (CHECKPOINT, State, check_run_dir, load_checkpoint, run_precision, run_settings,
                                        save_checkpoint)
from edgecifar.train.config import RunConfig
from edgecifar.train.distributed import session
from edgecifar.train.pipeline import epoch_dataset, predict
from edgecifar.train.recipes import Precision, Recipe
from edgecifar.units import percent


@dataclass
class EarlyStopper:
    """Patience on a validation figure, lower is better (the loss, or minus the accuracy); remembers the best
    epoch so its weights can be restored. Without patience it never stops and only selects.

    Epochs before ``start`` (0-based) are neither counted nor candidates, as Keras' ``EarlyStopping(start_from_epoch)``:
    early validation figures are noise to patience, not overfitting."""

    patience: int | None
    best: float = float("inf")
    best_epoch: int = -1
    wait: int = 0
    start: int = 0

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record ``val_loss``; return True when training should stop."""
        if epoch < self.start:
            return False
        if val_loss < self.best:
            self.best, self.best_epoch, self.wait = val_loss, epoch, 0
            return False
        self.wait += 1
        return self.patience is not None and self.wait >= self.patience



def run(cfg: RunConfig, console=None) -> dict:
    """Train ``cfg.recipe`` and write the run directory; return the metrics dict.

    With ``cfg.strategy`` the run is data-parallel on tf.distribute (train/distributed.py): the strategy
    is created first, and only the chief writes the run directory."""
    with session(cfg) as (cfg, dist):
        return _run(cfg, console, dist)


def _run(cfg: RunConfig, console, dist) -> dict:
    from rich.console import Console

    console = console or Console(stderr=True, soft_wrap=True)  # a log line is one line, piped or not
    recipe, run_dir = cfg.recipe, cfg.run_dir
    if recipe.epochs < 1 or recipe.batch_size < 1:
        raise EdgeCifarError(f"epochs and batch size must be at least 1 (got {recipe.epochs}, {recipe.batch_size})")
    check_run_dir(cfg)
    if cfg.overwrite and not cfg.resume and run_dir.exists():
        shutil.rmtree(run_dir)
    precision = run_precision(cfg)
    # The recipe keeps its wish (metrics.json's recipe_settings, the resume check); the model is built as decided.
    built = dataclasses.replace(recipe, mixed_bfloat16=precision.bf16)
    created = not run_dir.exists()
    check_writable_dir(run_dir)
    try:
        return _train(cfg, console, dist, precision, built)
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # an error before the first file (no data, no weights): leave no empty run folder
        raise


def _train(cfg: RunConfig, console, dist, precision: Precision, built: Recipe) -> dict:
    import keras
    import tensorflow as tf

    from edgecifar.models.stats import count_macs, count_params
    from edgecifar.train.progress import ProgressCallback, make_progress

    recipe, run_dir = cfg.recipe, cfg.run_dir
    ds = cifar.load(cfg.data, size=(cfg.image_size, cfg.image_size))
    console.print(ds.summary())
    console.print(f"precision: {precision.policy} ({precision.reason})")
    cfg.classes = len(ds.label_names)
    if recipe.distill and tuple(ds.label_names) != LABELS:
        raise EdgeCifarError(f"recipe {recipe.name} distils from {recipe.distill}, a CIFAR-10 model; the data's "
                             f"classes are {', '.join(ds.label_names[:5])}...: choose a recipe without distillation")
    (x_tr, y_tr), (x_val, y_val), (x_test, y_test), said = _splits(ds, cfg.val_size)
    if said:
        console.print(said)
    steps = -(-len(x_tr) // recipe.batch_size)

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    if dist is not None:
        model, state = dist.model_and_state(dataclasses.replace(cfg, recipe=built), steps)
    elif cfg.resume:
        model, state = load_checkpoint(run_dir)
        console.print(f"resuming {run_dir} after epoch {state.epochs_done}/{recipe.epochs}")
    else:
        model, state = build_model(built, cfg.weights, tuple(x_tr.shape[1:]), cfg.classes, cfg.user_model,
                                   console.print), State()
        compile_model(model, recipe, steps, recipe.unfreeze_at or recipe.epochs)
    if state.epochs_done == 0:
        state.settings, state.precision = run_settings(recipe, cfg.image_size), precision.policy
    if recipe.whiten_stem and state.epochs_done == 0:
        from edgecifar.train.whiten import whiten_stem

        whiten_stem(model, x_tr)
    stopper = EarlyStopper(**{**state.stopper, "patience": recipe.early_stopping, "start": recipe.early_stopping_from})
    best_weights = run_dir / CHECKPOINT / "best.weights.h5"
    ema = _weight_average(model, recipe, run_dir, state, dist)
    soft, teacher = _distillation_targets(recipe, run_dir, x_tr, y_tr, ds.fingerprint, cfg.seed, console)
    refreshed = None   # what the BatchNorm re-estimation did, when a short run needs it (_refresh_stale_statistics)

    with (make_progress(console) if cfg.progress else _NullProgress(console)) as progress:
        run_task = progress.add_task("run", total=steps * recipe.epochs, completed=steps * state.epochs_done,
                                     loss=0.0, acc=0.0, ips=0.0)
        for epoch in range(state.epochs_done, recipe.epochs):
            if state.stopped_early:
                break
            _unfreeze_stage(model, recipe, epoch, steps, dist)
            cb = ProgressCallback(progress, run_task, epoch, recipe.epochs, steps, recipe.batch_size, len(x_tr))
            train_ds = epoch_dataset(x_tr, y_tr if soft is None else soft, recipe.batch_size, cfg.seed, epoch,
                                     recipe.augment, cfg.classes)
            if dist is not None:  # tf.distribute step loop: Keras 3 model.fit breaks under multi-worker
                hist = _History({k: [v] for k, v in dist.fit_epoch(model, train_ds, cb).items()})
                val_loss, val_acc = dist.evaluate(model, x_val, y_val)
            else:
                hist = model.fit(train_ds, epochs=1, verbose=0, shuffle=False, callbacks=[cb, *([ema] if ema else [])])
                refreshed = _refresh_stale_statistics(model, recipe, steps * (epoch + 1), x_tr,
                                                      progress.console if refreshed is None else None) or refreshed
                val_loss, val_acc = _evaluate(model, x_val, y_val)
            row = {"epoch": epoch + 1, "loss": hist.history["loss"][-1], "accuracy": hist.history["accuracy"][-1],
                   "val_loss": float(val_loss), "val_accuracy": float(val_acc),
                   "lr": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
                   "seconds": round(cb.seconds, 2), "images_per_s": round(cb.images_per_second, 1)}
            if ema is not None:
                with ema.swapped_in():
                    row["ema_val_accuracy"] = float(_evaluate(model, x_val, y_val)[1])
            state.history.append(row)
            state.train_seconds += cb.seconds
            stop = stopper.update(epoch, -float(val_acc) if recipe.select == "val_accuracy" else float(val_loss))
            if recipe.select != "last" and stopper.best_epoch == epoch:
                with atomic_path(best_weights, suffix=".weights.h5") as tmp:
                    model.save_weights(tmp)
            state.epochs_done, state.stopper = epoch + 1, asdict(stopper)
            state.stopped_early = bool(stop)
            save_checkpoint(run_dir, model, state, ema)
            averaged = f" ema_val_acc {percent(row['ema_val_accuracy'], 2)}" if ema is not None else ""
            progress.console.print(
                f"epoch {epoch + 1}/{recipe.epochs}: loss {row['loss']:.4f} acc {percent(row['accuracy'], 2)} "
                f"val_loss {row['val_loss']:.4f} val_acc {percent(row['val_accuracy'], 2)}{averaged} "
                f"{row['images_per_s']:,.0f} img/s {row['seconds']:.1f}s")
            if stop:
                progress.console.print(f"early stopping: no better {recipe.select} for {recipe.early_stopping} "
                                       f"epochs; restoring epoch {stopper.best_epoch + 1}")

    if recipe.select != "last" and best_weights.exists():
        model.load_weights(best_weights)
    if ema is not None:
        ema.copy_to_model()
    final = float32_copy(model, built, cfg.weights, cfg.user_model)
    val_scores, test_scores = predict(final, x_val), predict(final, x_test)
    per_epoch_ips = [r["images_per_s"] for r in state.history[1:]] or [r["images_per_s"] for r in state.history]
    metrics = {
        "recipe": recipe.name, "model": cfg.user_model.spec if cfg.user_model else recipe.model, "seed": cfg.seed,
        "epochs": state.epochs_done, "epochs_planned": recipe.epochs, "batch_size": recipe.batch_size,
        "stopped_early": state.stopped_early,
        "best_epoch": stopper.best_epoch + 1 if recipe.select != "last" else None,
        "train_seconds": round(state.train_seconds, 1),
        "images_per_s": round(float(np.median(per_epoch_ips)), 1),
        "parameters": count_params(final), "macs": count_macs(final),
        "val_accuracy": _accuracy(val_scores, y_val), "val_images": int(len(y_val)),
        "test_accuracy": _accuracy(test_scores, y_test) if len(y_test) else None, "test_images": int(len(y_test)),
        "train_images": int(len(y_tr)),
        "data": {"source": ds.source, "fingerprint": ds.fingerprint, "train_batches": list(ds.train_batches)},
        "labels": list(ds.label_names), "input_shape": list(x_tr.shape[1:]),
        "recipe_settings": asdict(recipe),
        "precision": {"policy": precision.policy, "reason": precision.reason, "asked": cfg.precision,
                      "cpu_features": list(cpu_features())},
        "git_commit": git_commit(), "cpu": cpu_model(),
        "command": " ".join(["edgecifar", "train", *sys.argv[2:]]) if sys.argv[1:2] == ["train"] else None,
    }
    if teacher is not None:
        metrics["distillation"] = teacher
    if cfg.user_model is not None:
        metrics["user_model"] = cfg.user_model.describe()
    if refreshed:
        metrics["batchnorm_reestimated"] = refreshed
    if dist is not None:
        metrics.update(dist.describe())
    with atomic_path(run_dir / "model.keras") as tmp:
        final.save(tmp)
    write_text(run_dir / "history.csv", _history_csv(state.history))
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _unfreeze_stage(model, recipe: Recipe, epoch: int, steps: int, dist) -> None:
    """At epoch ``unfreeze_at`` the frozen backbone starts training, only its top ``unfreeze_top`` blocks when the
    recipe says so, and at ``unfreeze_all_at`` all of it (train/finetune.py); each time under a new optimizer whose
    schedule spans the remaining epochs; nothing at any other epoch."""
    if epoch == recipe.unfreeze_at:
        top = recipe.unfreeze_top
    elif epoch == recipe.unfreeze_all_at:
        top = None
    else:
        return
    if dist is not None:
        raise EdgeCifarError(f"recipe {recipe.name}: unfreezing a backbone works in a single process")
    from edgecifar.train.finetune import unfreeze

    compile_model(model, recipe, steps, recipe.epochs - epoch, backbone=unfreeze(model, recipe.bn_frozen, top))


def _weight_average(model, recipe: Recipe, run_dir: Path, state: State, dist):
    """The recipe's weight average (train/ema.py), restored from the checkpoint when resuming; or None."""
    if not recipe.ema:
        return None
    if dist is not None or recipe.early_stopping or recipe.select != "last":
        raise EdgeCifarError(f"recipe {recipe.name}: weight averaging (ema) works in a single process that keeps "
                             "the last epoch (no early stopping or selection)")
    from edgecifar.train.ema import WeightEMA

    ema = WeightEMA(model, recipe.ema)
    if state.epochs_done:
        path = run_dir / CHECKPOINT / f"epoch-{state.epochs_done:03d}.ema.npz"
        if not path.exists():
            raise EdgeCifarError(f"{path}: missing; the checkpoint has no weight average to resume")
        ema.load(path)
    return ema


def _distillation_targets(recipe: Recipe, run_dir: Path, x: np.ndarray, y: np.ndarray, fingerprint: str, seed: int,
                          console):
    """(soft targets, teacher description) for the recipe's teacher (train/distill.py): per-image targets, or with
    ``distill_views`` the teacher's views and their targets; (None, None) when off."""
    if not recipe.distill:
        return None, None
    from edgecifar.train.distill import VIEW_AUGMENT, TeacherViews, cached_teacher, soft_targets

    views = recipe.distill_views
    if views and recipe.augment != VIEW_AUGMENT:
        raise EdgeCifarError(f"recipe {recipe.name}: distill_views shows the teacher's {VIEW_AUGMENT} views in place "
                             f"of the recipe's augmentation, so augment must be {VIEW_AUGMENT} (got {recipe.augment})")
    probs, teacher = cached_teacher(run_dir, recipe.distill, x, fingerprint, views=views, seed=seed)
    teacher["teacher_train_accuracy"] = _accuracy(probs.reshape(-1, probs.shape[-1]), np.tile(y, max(views, 1)))
    what = f"{views} views of each image" if views else "each image and its mirror"
    labelled = (f"labelled {what} in {teacher['teacher_seconds']:.0f} s" if "teacher_seconds" in teacher
                else "from the run folder's cache")
    console.print(f"distilling from {teacher['teacher']} (weight {recipe.distill_alpha}, {labelled}); its accuracy "
                  f"on the {len(y):,} training images{' (all views)' if views else ''}: "
                  f"{percent(teacher['teacher_train_accuracy'], 2)}")
    if views:
        return TeacherViews.build(y, probs, recipe.distill_alpha, seed), teacher
    return soft_targets(y, probs, recipe.distill_alpha), teacher


#: A run whose BatchNorm moving averages still hold more than this share of their initial values (a small dataset:
#: few steps) gets them re-estimated from the training images before the model is saved.
STALE_LIMIT = 0.01


def _refresh_stale_statistics(model, recipe: Recipe, steps: int, x_tr: np.ndarray, console=None) -> dict | None:
    """BatchNorm moving statistics that a short run left near their initial values (mean 0, variance 1) make the
    saved model classify every image alike while training accuracy is perfect: seen here on 543 photos, 180 steps
    at momentum 0.99 (16% of the initial values left), 20% validation accuracy. Such a run's statistics are
    re-estimated from its training images (train/finetune.reestimate_bn) after every epoch, before validation, so
    that what each epoch's validation measures (and ``select`` keeps) is what is shipped; said once (``console``
    given: the first time). A run of CIFAR-10's
    size (thousands of steps) is untouched. Only recipes whose every BatchNorm layer trains (no frozen backbone),
    without weight averaging (``ema``: the average, statistics included, is what such a run evaluated and ships)."""
    from edgecifar.train.finetune import batchnorm_layers, reestimate_bn, stale_share

    layers = batchnorm_layers(model)
    if not layers or recipe.freeze != "none" or recipe.ema:
        return None
    stale = max(stale_share(float(layer.momentum), steps) for layer in layers)
    if stale <= STALE_LIMIT:
        return None
    images = x_tr[:5000].astype(np.float32)
    try:
        batches = reestimate_bn(model, images)
    except RuntimeError as exc:   # Ctrl-C inside TensorFlow's C++ arrives wrapped: give the CLI its KeyboardInterrupt
        if "KeyboardInterrupt" in str(exc):
            raise KeyboardInterrupt from None
        raise
    if console is not None:
        console.print(f"BatchNorm statistics re-estimated on {len(images):,} training images after each epoch: after "
                      f"{steps:,} steps {stale:.1%} of their initial values remained")
    return {"steps": int(steps), "stale_share": round(float(stale), 4), "images": int(len(images)),
            "batches": int(batches)}


def _splits(ds, val_size: int):
    """(training, validation, test) images and labels, and a line to say when the data decides them.

    CIFAR-10, or a photo folder without its own validation images: ``val_size`` images held out of training,
    stratified. A folder with ``val/`` and ``test/``: those. Test images are the data's own, or none when the
    data has nothing apart from its training images (a folder without split folders): never training images."""
    x_test, y_test = ds.x_test, ds.y_test
    none = (x_test[:0], y_test[:0])
    if np.shares_memory(x_test, ds.x_train):
        x_test, y_test = none
    own_val = len(ds.y_val) and not np.shares_memory(ds.x_val, x_test)
    if own_val:
        return (ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (x_test, y_test), \
            f"validation: the data's own {len(ds.y_val):,} images (--val-size not used)"
    if not 0 < val_size < len(ds.x_train):
        raise EdgeCifarError(f"--val-size {val_size} must be between 1 and {len(ds.x_train) - 1} "
                             f"(the data has {len(ds.x_train)} training images)")
    tr_idx, val_idx = cifar.stratified_split(ds.y_train, val_size, seed=0)
    said = "" if len(y_test) else "test: none (the data has no images apart from its training images)"
    return (ds.x_train[tr_idx], ds.y_train[tr_idx]), (ds.x_train[val_idx], ds.y_train[val_idx]), \
        (x_test, y_test), said


def _evaluate(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy) of the training model in its training precision: history.csv's val_loss, val_accuracy
    and (the weight average swapped in) ema_val_accuracy.

    metrics.json's val_accuracy is another figure: the shipped model (the average when the recipe has ``ema``:
    the same weights, BatchNorm statistics included) run in float32 by :func:`predict`, as it is exported.
    Under ``mixed_bfloat16`` bf16 arithmetic rounds differently, so the two may differ by a few images per
    thousand; in a float32 recipe they agree. Both are right; the float32 one describes the file shipped."""
    import keras

    loss, acc = model.evaluate(x.astype(np.float32), keras.utils.to_categorical(y, int(model.output_shape[-1])),
                               batch_size=500, verbose=0)
    return float(loss), float(acc)


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    from edgecifar.metrics import accuracy

    return round(accuracy(scores, labels), 4)


def _history_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


@dataclass
class _History:
    history: dict


class _NullProgress:
    """Stands in for rich.Progress when the bar is off (quiet or piped runs, tests): lines go to ``console``."""

    def __init__(self, console):
        self.console = console

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

