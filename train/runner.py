"""Train a recipe on CIFAR-10: tf.data pipeline, a checkpoint every epoch, resume, metrics.

A run directory holds ``checkpoint/`` (the last finished epoch, with optimizer state), and when the
run ends ``model.keras`` (float32, ready to export), ``history.csv`` and ``metrics.json``. Every file
is written to a temporary name and renamed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecifar import data as cifar
from edgecifar.errors import EdgeCifarError
from edgecifar.fileio import atomic_path, check_writable_dir, write_json, write_text
from edgecifar.host import cpu_features, cpu_model
from edgecifar.runs import default_run_dir, git_commit
from edgecifar.train.recipes import POLICIES, Precision, Recipe, resolve_precision
from edgecifar.units import percent

CHECKPOINT = "checkpoint"


@dataclass
class RunConfig:
    """Everything a run depends on besides the recipe's own settings."""

    recipe: Recipe
    seed: int = 0
    out: Path | None = None
    data: str | None = None
    val_size: int = 5000
    resume: bool = False
    overwrite: bool = False
    weights: str | None = None      # MobileNetV2 backbone weights (file or folder)
    progress: bool = True
    strategy: str | None = None     # None (one process), "mirrored" or "multi-worker": see train/distributed.py
    collective_timeout: float = 120.0   # seconds a worker waits for the others before failing
    precision: str = "auto"         # --precision: auto, float32 or bfloat16 (train.recipes.resolve_precision)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else default_run_dir(self.recipe.name, self.seed)


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


@dataclass
class State:
    """What a checkpoint needs beyond the model to continue exactly where it stopped."""

    epochs_done: int = 0
    history: list[dict] = field(default_factory=list)
    stopper: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    stopped_early: bool = False
    settings: dict | None = None    # the recipe's settings when the run started (run_settings); None: not recorded
    precision: str | None = None    # the Keras policy it trains in (run_precision); None: recorded before it was


# --------------------------------------------------------------------------- data pipeline

def epoch_dataset(x: np.ndarray, y: np.ndarray, batch: int, seed: int, epoch: int, augment: str):
    """One epoch of shuffled, augmented batches; a pure function of (seed, epoch), so ``--resume`` at an epoch
    boundary gets the same batches (alternating flips included: train/augment.py).

    ``y`` is integer labels (made one-hot here) or per-image target distributions ``[N, classes]``
    (distillation's soft targets, train/distill.py)."""
    import tensorflow as tf

    from edgecifar import NUM_CLASSES
    from edgecifar.train.augment import AUGMENTATIONS, mirror

    perm = np.random.default_rng([seed, epoch]).permutation(len(x))
    aug = AUGMENTATIONS[augment]
    flips = () if aug.flips is None else (aug.flips(len(x), seed, epoch)[perm],)   # one bool per image
    ds = tf.data.Dataset.from_tensor_slices((x[perm], y[perm], *flips)).batch(batch)

    def prepare(i, xy):
        images, targets, *flip = xy
        images = tf.cast(images, tf.float32)
        if flip:  # this batch's share of the epoch's flips
            images = mirror(images, flip[0])
        images = aug.per_batch(images, tf.stack([tf.cast(seed * 100_003 + epoch, tf.int64), i]))
        return images, (targets if y.ndim == 2 else tf.one_hot(targets, NUM_CLASSES))

    # No autotuning: destroying an autotuned iterator waits for tf.data's tuning thread, which held each epoch's
    # end (model.fit's return) for 3-15 s on this 2-core machine, up to a third of a small model's epoch; two
    # parallel batches and two prefetched are what the cores can use anyway.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.enumerate().map(prepare, num_parallel_calls=2, deterministic=True).prefetch(2).with_options(options)


def predict(model, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """Class probabilities for uint8 images, in batches (no augmentation)."""
    out = [np.asarray(model(x[i:i + batch].astype(np.float32), training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


# --------------------------------------------------------------------------- model assembly

def build_model(recipe: Recipe, weights: str | None = None):
    """Create and compile the recipe's model under its precision policy."""
    import keras

    from edgecifar import models
    from edgecifar.train.schedule import OneCycle  # noqa: F401  (registers the schedule for checkpoints)

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if recipe.mixed_bfloat16 else "float32")
    try:
        kwargs = dict(recipe.model_kwargs)
        if models.get(recipe.model).family == "mobilenetv2":
            kwargs.setdefault("weights", weights)
        model = models.create(recipe.model, **kwargs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if recipe.whiten_stem:  # frozen before compiling; its weights come from the data (train/whiten.py)
        from edgecifar.train.whiten import stem_layer

        stem_layer(model).trainable = False
    if recipe.bn_momentum is not None or recipe.freeze == "backbone":  # recipe decisions (train/finetune.py)
        from edgecifar.train import finetune

        if recipe.bn_momentum is not None:
            finetune.set_bn_momentum(model, recipe.bn_momentum)
        if recipe.freeze == "backbone":
            finetune.backbone_layer(model).trainable = False
    return model


def compile_model(model, recipe: Recipe, steps_per_epoch: int, epochs: int, backbone: list[str] = ()) -> None:
    """The recipe's optimizer, its schedule spanning ``epochs``; the variables whose paths are in ``backbone``
    learn at ``recipe.backbone_lr`` times the rate (train/finetune.py)."""
    import keras

    from edgecifar.train import schedule

    lr = schedule.make(recipe.schedule, recipe.lr, steps_per_epoch * epochs, recipe.warmup)
    if recipe.optimizer == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=recipe.momentum, nesterov=True,
                                   weight_decay=recipe.weight_decay or None)
    elif backbone and recipe.backbone_lr != 1.0:
        from edgecifar.train.finetune import GroupAdam

        opt = GroupAdam(lr, group=backbone, scale=recipe.backbone_lr)
    else:
        opt = keras.optimizers.Adam(lr)
    model.compile(optimizer=opt,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
                  metrics=["accuracy"])


def float32_copy(model, recipe: Recipe, weights: str | None):
    """The same network under the float32 policy: bf16 models need it to convert to TFLite."""
    if not recipe.mixed_bfloat16:
        return model
    clone = build_model(recipe.with_overrides(mixed_bfloat16=False), weights)
    clone.set_weights(model.get_weights())
    return clone


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(run_dir: Path, model, state: State, ema=None) -> None:
    """Write the model (with optimizer) and weight average, then the state naming them; drop older ones."""
    ckpt = run_dir / CHECKPOINT
    ckpt.mkdir(parents=True, exist_ok=True)
    stem = f"epoch-{state.epochs_done:03d}"
    with atomic_path(ckpt / f"{stem}.keras") as tmp:
        model.save(tmp)
    if ema is not None:
        ema.save(ckpt / f"{stem}.ema.npz")
    seeds = [np.asarray(v.value).tolist() for v in _seed_states(model)]
    write_json(ckpt / "state.json", {**asdict(state), "model": f"{stem}.keras", "seed_states": seeds})
    for old in ckpt.glob("epoch-*"):
        if not old.name.startswith(f"{stem}."):
            old.unlink()


def load_checkpoint(run_dir: Path):
    """Return (model, State) of the last finished epoch, or raise a one-line error."""
    import keras

    from edgecifar.train.finetune import GroupAdam  # noqa: F401  (registered for checkpoints, as the schedules)
    from edgecifar.train.schedule import OneCycle  # noqa: F401

    path = run_dir / CHECKPOINT / "state.json"
    if not path.exists():
        raise EdgeCifarError(f"{run_dir}: no checkpoint to resume from (run without --resume to start)")
    try:
        raw = json.loads(path.read_text())
        model = keras.models.load_model(run_dir / CHECKPOINT / raw.pop("model"))
        for v, value in zip(_seed_states(model), raw.pop("seed_states", [])):
            v.assign(np.asarray(value).astype(v.dtype))
    except Exception as exc:
        raise EdgeCifarError(f"{path}: checkpoint unreadable ({type(exc).__name__}: {exc})") from None
    return model, State(**raw)


def run_settings(recipe: Recipe) -> dict:
    """The recipe settings a run is made of, as its checkpoint records them: every field but the name and the
    description, in JSON's types."""
    return json.loads(json.dumps({k: v for k, v in asdict(recipe).items() if k not in ("name", "description")}))


def _started(run_dir: Path) -> dict:
    """The checkpoint's state.json, or {} when it is absent or unreadable (load_checkpoint says so)."""
    try:
        state = json.loads((run_dir / CHECKPOINT / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def check_resume_settings(recipe: Recipe, run_dir: Path, precision: str = "auto") -> None:
    """Refuse to resume a run with other settings than it started with (``--epochs``, ``--batch-size``, ``--ema``,
    ``--whiten-stem``, ``--precision`` or an edited recipe): its checkpoint's learning-rate schedule spans the epochs
    and batches it started with (past that end the rate is 0), and its metrics.json would describe a run that never
    happened. Cheap (state.json only). A checkpoint that predates the recorded settings is checked on its schedule
    alone once loaded (:func:`check_checkpoint_schedule`)."""
    path = run_dir / CHECKPOINT / "state.json"
    state = _started(run_dir)
    trained_in, asked = state.get("precision"), POLICIES.get(precision)
    if trained_in and asked and asked != trained_in:
        raise EdgeCifarError(f"{path}: this run started in {trained_in} and cannot resume in {asked} "
                             f"(--precision {precision}); resume with --precision auto, which keeps its precision, "
                             "or start a new run folder (--out) for the new one")
    started = state.get("settings")
    if not isinstance(started, dict) or not started:
        return
    now = run_settings(recipe)
    changed = [k for k in now if k in started and started[k] != now[k]]
    if changed:
        listed = lambda values: ", ".join(f"{k} {values[k]}" for k in changed)  # noqa: E731
        raise EdgeCifarError(f"{path}: this run started with {listed(started)} and cannot resume with "
                             f"{listed(now)} (its learning-rate schedule and records span the run it started); "
                             "resume with its settings, or start a new run folder (--out) for the new ones")


def check_checkpoint_schedule(model, recipe: Recipe, steps: int, epochs_done: int, run_dir: Path) -> None:
    """For a checkpoint without recorded settings (written before they were): refuse to resume when the
    learning rate its optimizer restores is not the one this recipe compiles for the stage the run is in
    (:func:`compile_model`, :func:`_unfreeze_stage`), e.g. a schedule that ends before a larger ``--epochs``."""
    from edgecifar.train import schedule

    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    saved = optimizer.get_config()["learning_rate"]
    start = max([0] + [e for e in (recipe.unfreeze_at, recipe.unfreeze_all_at) if e is not None and e < epochs_done])
    end = recipe.unfreeze_at if start == 0 and recipe.unfreeze_at else recipe.epochs
    wanted = schedule.make(recipe.schedule, recipe.lr, steps * (end - start), recipe.warmup)
    if not isinstance(wanted, (int, float)):  # as the optimizer's config serialises a schedule
        wanted = {"class_name": type(wanted).__name__, "config": wanted.get_config()}
    if not _same_rate(saved, wanted):
        raise EdgeCifarError(
            f"{run_dir / CHECKPOINT / f'epoch-{epochs_done:03d}.keras'}: its learning rate is "
            f"{_describe_rate(saved)}, these settings give {_describe_rate(wanted)} ({end - start} epochs of "
            f"{steps} batches); a resumed run keeps the schedule it started with: resume with its settings, or "
            "start a new run folder (--out) for the new ones")


def _same_rate(a, b) -> bool:
    """Whether two optimizer ``learning_rate`` configs (a number, or a serialised schedule) are the same rate."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a["class_name"] == b["class_name"] and a["config"] == b["config"]
    if isinstance(a, dict) or isinstance(b, dict):
        return False
    return abs(float(a) - float(b)) <= 1e-6 * abs(float(b))  # a float32 variable in the optimizer


def _describe_rate(rate) -> str:
    """An optimizer ``learning_rate`` config in words."""
    if not isinstance(rate, dict):
        return f"constant {float(rate):.6g}"
    kind = {"OneCycle": "one_cycle", "Cosine": "cosine"}.get(rate["class_name"], rate["class_name"])
    c = rate["config"]
    return f"{kind} peaking at {c.get('peak')} (warmup {c.get('warmup')}) over {c.get('total_steps')} steps"


def _seed_states(model) -> list:
    """Dropout's random-number states: a .keras file does not keep them (Keras 3.15 reloads fresh ones), so a
    resumed run would draw other dropout masks; the checkpoint's state.json keeps them."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


# --------------------------------------------------------------------------- the run

def check_run_dir(cfg: RunConfig) -> None:
    """Refuse a run folder that does not fit --resume/--overwrite; cheap, so the CLI calls it before
    TensorFlow and the data load. (A multi-worker run's other workers resume from the chief's checkpoint.)"""
    run_dir = cfg.run_dir
    if cfg.resume and cfg.strategy != "multi-worker" and not (run_dir / CHECKPOINT / "state.json").exists():
        raise EdgeCifarError(f"{run_dir}: no checkpoint to resume from (run without --resume to start)")
    if not cfg.resume and (run_dir / CHECKPOINT).exists() and not cfg.overwrite:
        raise EdgeCifarError(f"{run_dir}: a run is already there; add --resume to continue it "
                             "or --overwrite to start again")
    if cfg.resume:
        check_resume_settings(cfg.recipe, run_dir, cfg.precision)


def run_precision(cfg: RunConfig) -> Precision:
    """The precision the run trains in, decided once. A resumed run keeps its own: as its checkpoint records it, or,
    for a checkpoint from before precisions were recorded, its recipe's (what training did then). A new run (and a
    multi-worker run's other workers, which have no checkpoint of their own) resolves ``--precision``, the recipe's
    wish and this CPU (train.recipes.resolve_precision)."""
    state = _started(cfg.run_dir) if cfg.resume else {}
    if state.get("precision"):
        return Precision(state["precision"], "the run's own, kept by --resume")
    if state:
        return Precision(POLICIES["bfloat16" if cfg.recipe.mixed_bfloat16 else "float32"],
                         "the run's own (its recipe's), kept by --resume")
    return resolve_precision(cfg.recipe.mixed_bfloat16, cfg.precision, cpu_features())


def run(cfg: RunConfig, console=None) -> dict:
    """Train ``cfg.recipe`` and write the run directory; return the metrics dict.

    With ``cfg.strategy`` the run is data-parallel on tf.distribute (train/distributed.py): the strategy
    is created first, and only the chief writes the run directory."""
    from edgecifar.train.distributed import session

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
    ds = cifar.load(cfg.data)
    console.print(ds.summary())
    console.print(f"precision: {precision.policy} ({precision.reason})")
    if not 0 < cfg.val_size < len(ds.x_train):
        raise EdgeCifarError(f"--val-size {cfg.val_size} must be between 1 and {len(ds.x_train) - 1} "
                             f"(the data has {len(ds.x_train)} training images)")
    tr_idx, val_idx = cifar.stratified_split(ds.y_train, cfg.val_size, seed=0)
    x_tr, y_tr = ds.x_train[tr_idx], ds.y_train[tr_idx]
    x_val, y_val = ds.x_train[val_idx], ds.y_train[val_idx]
    steps = -(-len(x_tr) // recipe.batch_size)

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    if dist is not None:
        model, state = dist.model_and_state(dataclasses.replace(cfg, recipe=built), steps)
    elif cfg.resume:
        model, state = load_checkpoint(run_dir)
        if state.settings is None:
            check_checkpoint_schedule(model, recipe, steps, state.epochs_done, run_dir)
        console.print(f"resuming {run_dir} after epoch {state.epochs_done}/{recipe.epochs}")
    else:
        model, state = build_model(built, cfg.weights), State()
        compile_model(model, recipe, steps, recipe.unfreeze_at or recipe.epochs)
    if state.epochs_done == 0:
        state.settings, state.precision = run_settings(recipe), precision.policy
    if recipe.whiten_stem and state.epochs_done == 0:
        from edgecifar.train.whiten import whiten_stem

        whiten_stem(model, x_tr)
    stopper = EarlyStopper(**{**state.stopper, "patience": recipe.early_stopping, "start": recipe.early_stopping_from})
    best_weights = run_dir / CHECKPOINT / "best.weights.h5"
    ema = _weight_average(model, recipe, run_dir, state, dist)
    soft, teacher = _distillation_targets(recipe, run_dir, x_tr, y_tr, ds.fingerprint, console)

    with (make_progress(console) if cfg.progress else _NullProgress(console)) as progress:
        run_task = progress.add_task("run", total=steps * recipe.epochs, completed=steps * state.epochs_done,
                                     loss=0.0, acc=0.0, ips=0.0)
        for epoch in range(state.epochs_done, recipe.epochs):
            if state.stopped_early:
                break
            _unfreeze_stage(model, recipe, epoch, steps, dist)
            cb = ProgressCallback(progress, run_task, epoch, recipe.epochs, steps, recipe.batch_size, len(x_tr))
            train_ds = epoch_dataset(x_tr, y_tr if soft is None else soft, recipe.batch_size, cfg.seed, epoch,
                                     recipe.augment)
            if dist is not None:  # tf.distribute step loop: Keras 3 model.fit breaks under multi-worker
                hist = _History({k: [v] for k, v in dist.fit_epoch(model, train_ds, cb).items()})
                val_loss, val_acc = dist.evaluate(model, x_val, y_val)
            else:
                hist = model.fit(train_ds, epochs=1, verbose=0, shuffle=False, callbacks=[cb, *([ema] if ema else [])])
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
    final = float32_copy(model, built, cfg.weights)
    val_scores, test_scores = predict(final, x_val), predict(final, ds.x_test)
    per_epoch_ips = [r["images_per_s"] for r in state.history[1:]] or [r["images_per_s"] for r in state.history]
    metrics = {
        "recipe": recipe.name, "model": recipe.model, "seed": cfg.seed,
        "epochs": state.epochs_done, "epochs_planned": recipe.epochs, "batch_size": recipe.batch_size,
        "stopped_early": state.stopped_early,
        "best_epoch": stopper.best_epoch + 1 if recipe.select != "last" else None,
        "train_seconds": round(state.train_seconds, 1),
        "images_per_s": round(float(np.median(per_epoch_ips)), 1),
        "parameters": count_params(final), "macs": count_macs(final),
        "val_accuracy": _accuracy(val_scores, y_val), "val_images": int(len(y_val)),
        "test_accuracy": _accuracy(test_scores, ds.y_test), "test_images": int(len(ds.y_test)),
        "train_images": int(len(y_tr)),
        "data": {"source": ds.source, "fingerprint": ds.fingerprint, "train_batches": list(ds.train_batches)},
        "recipe_settings": asdict(recipe),
        "precision": {"policy": precision.policy, "reason": precision.reason, "asked": cfg.precision,
                      "cpu_features": list(cpu_features())},
        "git_commit": git_commit(), "cpu": cpu_model(),
        "command": " ".join(["edgecifar", "train", *sys.argv[2:]]) if sys.argv[1:2] == ["train"] else None,
    }
    if teacher is not None:
        metrics["distillation"] = teacher
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


def _distillation_targets(recipe: Recipe, run_dir: Path, x: np.ndarray, y: np.ndarray, fingerprint: str, console):
    """(soft targets, teacher description) for the recipe's teacher (train/distill.py); (None, None) when off."""
    if not recipe.distill:
        return None, None
    from edgecifar.train.distill import cached_teacher, soft_targets

    probs, teacher = cached_teacher(run_dir, recipe.distill, x, fingerprint)
    teacher["teacher_train_accuracy"] = _accuracy(probs, y)
    console.print(f"distilling from {teacher['teacher']} (weight {recipe.distill_alpha}); its accuracy on the "
                  f"{len(y):,} training images: {percent(teacher['teacher_train_accuracy'], 2)}")
    return soft_targets(y, probs, recipe.distill_alpha), teacher


def _evaluate(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy) of the training model in its training precision: history.csv's val_loss, val_accuracy
    and (the weight average swapped in) ema_val_accuracy.

    metrics.json's val_accuracy is another figure: the shipped model (the average when the recipe has ``ema``:
    the same weights, BatchNorm statistics included) run in float32 by :func:`predict`, as it is exported.
    Under ``mixed_bfloat16`` bf16 arithmetic rounds differently, so the two may differ by a few images per
    thousand; in a float32 recipe they agree. Both are right; the float32 one describes the file shipped."""
    import keras

    loss, acc = model.evaluate(x.astype(np.float32), keras.utils.to_categorical(y, 10), batch_size=500, verbose=0)
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
