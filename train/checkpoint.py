"""A run's checkpoint and its resume policy.

``checkpoint/`` holds the last finished epoch: the model with its optimizer (``epoch-NNN.keras``), the weight
average when the recipe has one, and ``state.json`` (:class:`State`: progress, history, the recipe settings and
precision the run started with, dropout's random states). ``--resume`` continues it only with those settings and
that precision; the checks read state.json alone, so the CLI runs them before TensorFlow loads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgecifar.errors import EdgeCifarError
from edgecifar.fileio import atomic_path, write_json
from edgecifar.host import cpu_features
from edgecifar.train.config import RunConfig
from edgecifar.train.recipes import POLICIES, Precision, Recipe, resolve_precision

CHECKPOINT = "checkpoint"


@dataclass
class State:
    """What a checkpoint needs beyond the model to continue exactly where it stopped."""

    epochs_done: int = 0
    history: list[dict] = field(default_factory=list)
    stopper: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    stopped_early: bool = False
    settings: dict | None = None    # the recipe's settings when the run started (run_settings)
    precision: str | None = None    # the Keras policy it trains in (run_precision); None: recorded before it was


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

    from edgecifar.train.optimizers import GroupAdam  # noqa: F401  (registered for checkpoints, as the schedules)
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


def _seed_states(model) -> list:
    """Dropout's random-number states: a .keras file does not keep them (Keras 3.15 reloads fresh ones), so a
    resumed run would draw other dropout masks; the checkpoint's state.json keeps them."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def run_settings(recipe: Recipe, image_size: int = 32) -> dict:
    """The settings a run is made of, as its checkpoint records them: every recipe field but the name and the
    description, and ``--image-size`` (its model's input), in JSON's types."""
    settings = {k: v for k, v in asdict(recipe).items() if k not in ("name", "description")}
    return json.loads(json.dumps({**settings, "image_size": image_size}))


def _started(run_dir: Path) -> dict:
    """The checkpoint's state.json, or {} when it is absent or unreadable (load_checkpoint says so)."""
    try:
        state = json.loads((run_dir / CHECKPOINT / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def check_resume_settings(recipe: Recipe, run_dir: Path, precision: str = "auto", image_size: int = 32) -> None:
    """Refuse to resume a run with other settings than it started with (``--epochs``, ``--batch-size``, ``--ema``,
    ``--whiten-stem``, ``--precision`` or an edited recipe): its checkpoint's learning-rate schedule spans the epochs
    and batches it started with (past that end the rate is 0), and its metrics.json would describe a run that never
    happened. Cheap (state.json only)."""
    path = run_dir / CHECKPOINT / "state.json"
    state = _started(run_dir)
    trained_in, asked = state.get("precision"), POLICIES.get(precision)
    if trained_in and asked and asked != trained_in:
        raise EdgeCifarError(f"{path}: this run started in {trained_in} and cannot resume in {asked} "
                             f"(--precision {precision}); resume with --precision auto, which keeps its precision, "
                             "or start a new run folder (--out) for the new one")
    if not state:
        return  # absent or unreadable: load_checkpoint says so
    started = state.get("settings")
    if not isinstance(started, dict) or not started:
        raise EdgeCifarError(f"{path}: records no settings the run started with (written before they were "
                             "recorded), so resuming could not keep its learning-rate schedule; start a new run "
                             "folder (--out), or --overwrite this one")
    now = run_settings(recipe, image_size)
    changed = [k for k in now if k in started and started[k] != now[k]]
    if changed:
        listed = lambda values: ", ".join(f"{k} {values[k]}" for k in changed)  # noqa: E731
        raise EdgeCifarError(f"{path}: this run started with {listed(started)} and cannot resume with "
                             f"{listed(now)} (its learning-rate schedule and records span the run it started); "
                             "resume with its settings, or start a new run folder (--out) for the new ones")


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
        check_resume_settings(cfg.recipe, run_dir, cfg.precision, cfg.image_size)


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

