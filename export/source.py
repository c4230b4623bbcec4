"""Find and open the model to export: a run directory, a ``.keras`` or ``.h5`` file, a SavedModel folder, or the
most recent run.

Every way this can go wrong (no run yet, a path that is not a model, a file Keras cannot load, a model that is not
an image classifier: export/adapt.py) is one ModelError line. Keras files are code-bearing: they are loaded with
``safe_mode=True``, so a Lambda layer (Python code) is refused, never run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgecifar.contract import MAX_LABEL
from edgecifar.errors import ModelError, one_line
from edgecifar.export import adapt, savedmodel
from edgecifar.export import tta as tta_kinds
from edgecifar.fileio import portable_path, sha256
from edgecifar.runs import latest_run, runs_root

MODEL_FILE = "model.keras"
#: Keras 2 wrote these config keys that Keras 3 refuses, with the value they always had: a layer whose config holds
#: that value loads without the key (any other value is refused in one line). DepthwiseConv2D inherited
#: ``groups`` from Conv2D in tf.keras and wrote ``"groups": 1``; Keras 3 says "Unrecognized keyword arguments passed
#: to DepthwiseConv2D: {'groups': 1}" on every MobileNet-style .h5 made before it.
LEGACY_KEYS: dict[str, dict[str, Any]] = {"DepthwiseConv2D": {"groups": 1}}


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
    def is_run(self) -> bool:
        """A model of an edgecifar run folder (its metrics.json was read): it takes pixels 0..255."""
        return bool(self.metrics)

    @property
    def kind(self) -> str:
        """Its key in :data:`LOADERS`: ``.keras``, ``.h5``, ``.hdf5``, or ``savedmodel`` for a SavedModel folder."""
        return "savedmodel" if self.path.is_dir() else self.path.suffix.lower()

    @property
    def labels(self) -> tuple[str, ...] | None:
        """The class names the run trained on (metrics.json ``labels``), None when it does not say."""
        names = self.metrics.get("labels")
        if isinstance(names, list) and names and all(isinstance(n, str) and 0 < len(n) <= MAX_LABEL and n.isprintable()
                                                     for n in names):
            return tuple(names)
        return None

    @property
    def views(self) -> int:
        """Images the network sees per input image: 1, or the TTA kind's views (its MACs and memory scale by it)."""
        return tta_kinds.get(self.tta).views if self.tta else 1

    @property
    def name(self) -> str:
        """File name prefix: the recipe, else the .keras stem (the run folder's name for model.keras)."""
        raw = self.metrics.get("recipe") or (self.run_dir.name if self.path.name == MODEL_FILE
                                             else self.path.name if self.path.is_dir() else self.path.stem)
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
        if savedmodel.is_savedmodel(path):
            return Source(path, {}, tta)
        if path.is_dir():
            if not (path / MODEL_FILE).is_file():
                raise ModelError(f"{path}: not a run directory (no {MODEL_FILE} inside) nor a SavedModel folder "
                                 f"(no {savedmodel.PROTO})")
            path = path / MODEL_FILE
        elif not path.exists():
            raise ModelError(f"{path}: no such run directory or .keras file")
        elif path.suffix.lower() not in LOADERS:
            raise ModelError(f"{path}: not a Keras model (expected a run directory, a .keras or .h5 file, or a "
                             "SavedModel folder)")
    return Source(path, _read_metrics(path.parent / "metrics.json"), tta)


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def legacy_layers() -> dict[str, Any]:
    """``custom_objects`` for a Keras 2 .h5: each layer of :data:`LEGACY_KEYS` as a subclass whose config drops the
    keys Keras 2 wrote with their fixed value (Keras 3 refuses them), and refuses another value in one line."""
    import keras

    def cleaned(base: type, dropped: dict[str, Any]) -> type:
        class Legacy(base):
            @classmethod
            def from_config(cls, config, *args, **kwargs):
                config = dict(config)
                for key, value in dropped.items():
                    found = config.pop(key, value)
                    if found != value:
                        raise ValueError(f"a {base.__name__} with {key}={found!r}: Keras 3 has no such setting")
                return super().from_config(config, *args, **kwargs)

        Legacy.__name__ = Legacy.__qualname__ = base.__name__
        return Legacy

    return {name: cleaned(getattr(keras.layers, name), keys) for name, keys in LEGACY_KEYS.items()}


def _load_keras(path: Path, custom_objects: dict[str, Any] | None = None):
    import keras

    return keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=True)


def _load_h5(path: Path):
    return single_input(_load_keras(path, legacy_layers()))


def single_input(model):
    """A Keras 2 model whose inputs are a one-element list (``"input_layers": [["input_1", 0, 0]]``) as one that takes
    the tensor itself: every later call passes one tensor, and Keras would warn about the structure at each."""
    import keras

    if not isinstance(getattr(model, "_inputs_struct", None), list) or len(model.inputs) != 1:
        return model
    (inner,) = model.inputs
    inp = keras.Input(batch_shape=tuple(inner.shape), dtype=inner.dtype, name=inner.name)
    return keras.Model(inp, model([inp]), name=model.name)


#: Source.kind -> loader (path -> keras.Model); the one list of what export opens.
LOADERS: dict[str, Callable[[Path], Any]] = {".keras": _load_keras, ".h5": _load_h5, ".hdf5": _load_h5,
                                              "savedmodel": savedmodel.load}

#: What to do when Keras refuses a file, by a phrase of its error: the code it will not run, or a Keras 2 file.
REFUSALS: tuple[tuple[str, str], ...] = (
    ("`Lambda`", "it has a Lambda layer (Python code), which edgecifar never runs (Keras safe_mode): rebuild the "
                 "model without it, or save it where you trust it as a SavedModel (model.export(DIR)) and export "
                 "that folder"),
    ("`TFSMLayer`", "it wraps a SavedModel by path (TFSMLayer), which edgecifar never loads from a Keras file: "
                    "export the SavedModel folder itself"),
)
H5_ADVICE = ("a Keras 2 .h5 that Keras 3 cannot read: open it where it was made (tf_keras) and save it as a "
             "SavedModel (model.export(DIR) or tf.saved_model.save), then export that folder")


def _keras_error(exc: Exception) -> str:
    """Keras' own reason, one line: the "Exception encountered" line of a deserialisation error (its first line is
    a config hundreds of characters long), else the first line."""
    text = str(exc)
    if "Exception encountered:" in text:
        lines = [line.strip() for line in text.split("Exception encountered:", 1)[1].splitlines() if line.strip()]
        if lines:
            return lines[0][:300]
    return one_line(exc)


def load_model(source: Source):
    """The model, uncompiled (export needs no optimizer), and what it takes and gives (export/adapt.py), checked:
    one ModelError line naming the file for a file Keras cannot load and for a model export cannot take."""
    try:
        model = LOADERS[source.kind](source.path)
    except ModelError:
        raise
    except Exception as exc:  # zip, h5 and deserialisation errors of every kind
        text = str(exc)
        advice = next((a for phrase, a in REFUSALS if phrase in text), None)
        if advice is None and source.kind != ".keras":
            advice = H5_ADVICE
        reason = _keras_error(exc)
        raise ModelError(f"{source.path}: not a loadable Keras model ({reason})" + (f"; {advice}" if advice else "")
                         ) from None
    return model, adapt.check(model, str(source.path), run=source.is_run)


def digest(path: Path) -> str:
    """The model's sha256: of the file, or of a SavedModel folder's files (relative names and contents, sorted)."""
    if not path.is_dir():
        return sha256(path)
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        h.update(str(file.relative_to(path)).encode("utf-8", "surrogateescape") + b"\0" + sha256(file).encode())
    return h.hexdigest()


def describe(source: Source, model, digest: str) -> dict[str, Any]:
    """The manifest's ``source`` block; parameters and MACs from metrics.json, else counted."""
    params, macs = source.metrics.get("parameters"), source.metrics.get("macs")
    if params is None or macs is None:
        from edgecifar.models.stats import count_macs, count_params

        # A SavedModel is one opaque layer: its MACs are not counted (unknown, not 0).
        params, macs = count_params(model), None if source.kind == "savedmodel" else count_macs(model)
    macs = None if macs is None else int(macs * source.views)  # TTA runs the network once per view
    return {"model": portable_path(source.path), "sha256": digest[:16], "recipe": source.metrics.get("recipe"),
            "data_fingerprint": source.data_fingerprint, "parameters": int(params), "macs": macs}
