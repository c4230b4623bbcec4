"""Find and open the model to export: a run directory, a ``.keras`` file, or the most recent run.

Every way this can go wrong (no run yet, a path that is not a model, a model that breaks the
[N, 32, 32, 3] -> [N, 10] contract) is one ModelError line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecifar import INPUT_SHAPE
from edgecifar.errors import ModelError, one_line
from edgecifar.export import tta as tta_kinds
from edgecifar.fileio import portable_path
from edgecifar.runs import latest_run, runs_root

MODEL_FILE = "model.keras"


@dataclass
class Source:
    """The model file, the run directory it belongs to (if any) and that run's metrics.json."""

    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    tta: str | None = None  # a key of export.tta.TTA: export the model with that test-time augmentation inside

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def views(self) -> int:
        """Images the network sees per input image: 1, or the TTA kind's views (its MACs and memory scale by it)."""
        return tta_kinds.get(self.tta).views if self.tta else 1

    @property
    def name(self) -> str:
        """File name prefix: the recipe, else the .keras stem (the run folder's name for model.keras)."""
        raw = self.metrics.get("recipe") or (self.run_dir.name if self.path.name == MODEL_FILE else self.path.stem)
        raw = f"{raw}{tta_kinds.get(self.tta).suffix}" if self.tta else raw
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(raw)) or "model"

    @property
    def data_source(self) -> str | None:
        return (self.metrics.get("data") or {}).get("source")

    @property
    def data_fingerprint(self) -> str | None:
        return (self.metrics.get("data") or {}).get("fingerprint")

    @property
    def holdout(self) -> int | None:
        """How many training images the run held out for validation (train's --val-size)."""
        value = self.metrics.get("val_images")
        return int(value) if isinstance(value, int) and value > 0 else None


def resolve(arg: str | Path | None, tta: str | None = None) -> Source:
    """MODEL argument -> Source; without one, the newest finished run under runs/. ``tta``: a kind of
    export.tta.TTA, or None."""
    if tta is not None:
        tta_kinds.get(tta)  # an unknown kind fails here, before the model loads
    if arg is None:
        run = latest_run()
        if run is None:
            raise ModelError(f"no trained model in {runs_root()}/ (no */{MODEL_FILE}); train one with "
                             "`edgecifar train baseline`, or pass MODEL (a run directory or a .keras file)")
        path = run / MODEL_FILE
    else:
        path = Path(arg)
        if path.is_dir():
            if not (path / MODEL_FILE).is_file():
                raise ModelError(f"{path}: not a run directory (no {MODEL_FILE} inside)")
            path = path / MODEL_FILE
        elif not path.exists():
            raise ModelError(f"{path}: no such run directory or .keras file")
        elif path.suffix != ".keras":
            raise ModelError(f"{path}: not a Keras model (expected a run directory or a .keras file)")
    return Source(path, _read_metrics(path.parent / "metrics.json"), tta)


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_model(source: Source):
    """The Keras model, uncompiled (export needs no optimizer), with its contract checked."""
    import keras

    try:
        model = keras.saving.load_model(source.path, compile=False)
    except Exception as exc:  # zip, h5 and deserialisation errors of every kind
        raise ModelError(f"{source.path}: not a loadable Keras model ({one_line(exc)})") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{source.path}: {len(model.inputs)} inputs and {len(model.outputs)} outputs, "
                         "expected one [N, 32, 32, 3] input and one [N, 10] output")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or tuple(shape[1:]) != INPUT_SHAPE:
        shown = ", ".join("N" if d is None else str(d) for d in shape)
        raise ModelError(f"{source.path}: input shape [{shown}], expected [N, 32, 32, 3] pixels 0-255")
    out = tuple(model.outputs[0].shape)
    if len(out) != 2 or out[1] != 10:
        shown = ", ".join("N" if d is None else str(d) for d in out)
        raise ModelError(f"{source.path}: output shape [{shown}], expected [N, 10] class probabilities")
    if source.tta:
        model = tta_kinds.get(source.tta).wrap(model)
    return model


def describe(source: Source, model, digest: str) -> dict[str, Any]:
    """The manifest's ``source`` block; parameters and MACs from metrics.json, else counted."""
    params, macs = source.metrics.get("parameters"), source.metrics.get("macs")
    if params is None or macs is None:
        from edgecifar.models.stats import count_macs, count_params

        params, macs = count_params(model), count_macs(model)
    macs = macs * source.views  # TTA runs the network once per view
    return {"model": portable_path(source.path), "sha256": digest[:16], "recipe": source.metrics.get("recipe"),
            "data_fingerprint": source.data_fingerprint, "parameters": int(params), "macs": int(macs)}
